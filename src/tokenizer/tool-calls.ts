/**
 * Tool calls in a reply, in the two formats chat templates ask for:
 * - **hermes** (Qwen2.5, Qwen3, Hermes models): one block per call,
 *   `<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>`. As vLLM's hermes parser
 *   reads them: the text before the first block is the reply's content, a last block the token limit left unclosed is
 *   read if its JSON is whole, and a reply whose blocks do not all hold a call is plain text (content, no calls).
 *   Unlike it, text between or after the blocks is not dropped: it joins the content.
 * - **json** (Llama 3.1, 3.2, 3.3): the whole reply is the call, `{"name": "get_weather", "parameters": {"city":
 *   "Paris"}}` (after an optional `<|python_tag|>`; several calls separated by ";"), as vLLM's llama3_json parser
 *   reads it; any other reply is plain text.
 */
import { randomUUID } from 'node:crypto';
import { shown } from '../show.ts';
import type { ChatMessage } from './types.ts';

export const TOOL_CALL_OPEN = '<tool_call>', TOOL_CALL_CLOSE = '</tool_call>';
/** Llama 3.1's marker before a call (its built-in tools' and, optionally, JSON ones). */
const PYTHON_TAG = '<|python_tag|>';

/** How a chat template writes tool calls (see the module comment). */
export type ToolCallFormat = 'hermes' | 'json';

export interface ParsedToolCall {
  name: string;
  /** The arguments as JSON text of an object (OpenAI's `function.arguments`). */
  arguments: string;
}

export interface ParsedReply {
  /** The reply's text outside the tool calls ('' when there is none). */
  content: string;
  calls: ParsedToolCall[];
}

/**
 * The format a chat template writes tool calls in, undefined for one that takes no tools or writes calls some other
 * way: Hermes blocks, or (Llama 3.1–3.3) an assistant turn holding the call's JSON with its arguments as "parameters".
 */
export function toolCallFormat(source: string | undefined): ToolCallFormat | undefined {
  if (!source || !/\btools\b/.test(source)) return undefined;
  if (source.includes(TOOL_CALL_OPEN)) return 'hermes';
  return /\btool_calls\b/.test(source) && source.includes('"parameters": ') ? 'json' : undefined;
}

/** JSON text of an object, parsed; undefined for any other text (not JSON, or JSON of something else). */
export function jsonObject(text: string): Record<string, unknown> | undefined {
  let v: unknown;
  try { v = JSON.parse(text); } catch { return undefined; }
  return v && typeof v === 'object' && !Array.isArray(v) ? v as Record<string, unknown> : undefined;
}

/** The index of the quote that closes the JSON string opening at `i` (the text's length when none does). */
function stringEnd(text: string, i: number): number {
  for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === '\\') i++;
  return i;
}

/** The index just after the object or array opening at `i` closes (-1 when the text ends first). */
function valueEnd(text: string, i: number): number {
  for (let depth = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') i = stringEnd(text, i);
    else if (c === '{' || c === '[') depth++;
    else if ((c === '}' || c === ']') && --depth === 0) return i + 1;
  }
  return -1;
}

/** How deep the JSON text's arrays and objects nest (brackets outside strings counted; the text need not be valid). */
export function jsonDepth(text: string): number {
  let depth = 0, most = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') i = stringEnd(text, i);
    else if (c === '{' || c === '[') most = Math.max(most, ++depth);
    else if (c === '}' || c === ']') depth--;
  }
  return most;
}

/**
 * The source text of the object value of the last `key` member of `json` (the valid JSON text of an object), so that
 * a call's arguments come back as the model wrote them: parsed and written again, 12345678901234567890 would lose digits.
 */
function memberObjectText(json: string, key: string): string | undefined {
  let depth = 0, valueAt = -1, start = -1, found: string | undefined;
  for (let i = 0; i < json.length; i++) {
    const c = json[i];
    if (c === '"') {
      const s = i;
      i = stringEnd(json, i);
      if (depth !== 1) continue;
      let j = i + 1;
      while (/\s/.test(json[j] ?? '')) j++;
      if (json[j] !== ':' || JSON.parse(json.slice(s, i + 1)) !== key) continue;
      for (j++; /\s/.test(json[j] ?? ''); j++);
      valueAt = j;
    } else if (c === '{' || c === '[') {
      if (depth === 1 && i === valueAt && c === '{') start = i;
      depth++;
    } else if (c === '}' || c === ']') {
      depth--;
      if (depth === 1 && start >= 0) { found = json.slice(start, i + 1); start = -1; }
    }
  }
  return found;
}

/**
 * One block's JSON as a call, or undefined when it holds none: an object with a string name and object arguments
 * (`needArguments`: written out, as the JSON format's calls must be to tell them from a JSON answer with a "name").
 */
function callOf(json: string, needArguments = false): ParsedToolCall | undefined {
  const v = jsonObject(json);
  if (!v || (needArguments && !('arguments' in v) && !('parameters' in v))) return undefined;
  const key = 'arguments' in v ? 'arguments' : 'parameters', { name, [key]: args = {} } = v as Record<string, unknown>;
  if (typeof name !== 'string' || !name) return undefined;
  if (!args || typeof args !== 'object' || Array.isArray(args)) return undefined;
  return { name, arguments: memberObjectText(json, key) ?? JSON.stringify(args) };
}

/** Sorted keys all the way down: JSON that is equal as data is equal as text. */
const canonical = (v: unknown): unknown => (Array.isArray(v) ? v.map(canonical)
  : v && typeof v === 'object' ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical((v as Record<string, unknown>)[k])])) : v);

/** A vote key for a reply's calls: the same calls (names and arguments as data, however spaced or ordered) give the same key. */
export const callsKey = (calls: readonly ParsedToolCall[]): string => `tool calls: ${JSON.stringify(calls.map((c) => [c.name, canonical(JSON.parse(c.arguments))]))}`;

/**
 * A reply's tool calls and the rest of its text, in the template's format (see the module comment). In the JSON
 * format, where an answer may be JSON too, a reply is calls only when each has its arguments ("parameters" or
 * "arguments") and, given `names` (the tools offered), names one of them.
 */
export function parseToolCalls(text: string, format: ToolCallFormat = 'hermes', names?: readonly string[]): ParsedReply {
  checkFormat(format, names, 'parseToolCalls');
  if (typeof text !== 'string') throw new Error(`parseToolCalls: the reply must be a string, got ${shown(text)}`);
  if (format === 'hermes') return hermesCalls(text);
  const parsed = jsonCalls(text);
  return names && parsed.calls.some((c) => !names.includes(c.name)) ? { content: text, calls: [] } : parsed;
}

/** The arguments the library's callers give from plain JS: a format and the offered tools' names. */
function checkFormat(format: unknown, names: unknown, where: string): void {
  if (format !== 'hermes' && format !== 'json') throw new Error(`${where}: the format must be "hermes" or "json" (toolCallFormat gives a chat template's), got ${shown(format)}`);
  if (names !== undefined && !(Array.isArray(names) && names.every((x) => typeof x === 'string'))) throw new Error(`${where}: names must be a list of the offered tools' names, got ${shown(names)}`);
}

/** A reply that is one or more calls' JSON (after an optional python tag, separated by ";"), or plain text. */
function jsonCalls(text: string): ParsedReply {
  const plain = { content: text, calls: [] }, s = jsonStart(text), calls: ParsedToolCall[] = [];
  if (s === undefined) return plain;
  for (let at = 0; at < s.length;) {
    const end = s[at] === '{' ? valueEnd(s, at) : -1, call = end < 0 ? undefined : callOf(s.slice(at, end), true);
    if (!call) return plain;
    calls.push(call);
    at = end + /^\s*(;\s*)?/.exec(s.slice(end))![0].length;
  }
  return calls.length ? { content: '', calls } : plain;
}

/** The reply's text after leading whitespace and an optional python tag (trimmed), undefined when none remains. */
function jsonStart(text: string): string | undefined {
  let s = text.trim();
  if (s.startsWith(PYTHON_TAG)) s = s.slice(PYTHON_TAG.length).trimStart();
  return s || undefined;
}

function hermesCalls(text: string): ParsedReply {
  const first = text.indexOf(TOOL_CALL_OPEN);
  if (first < 0) return { content: text, calls: [] };
  const calls: ParsedToolCall[] = [], outside: string[] = [];
  let at = first;
  while (at < text.length) {
    const open = text.indexOf(TOOL_CALL_OPEN, at);
    if (open < 0) { outside.push(text.slice(at)); break; }
    outside.push(text.slice(at, open));
    const from = open + TOOL_CALL_OPEN.length, close = text.indexOf(TOOL_CALL_CLOSE, from);
    const call = callOf(text.slice(from, close < 0 ? undefined : close).trim());
    if (!call) return { content: text, calls: [] };
    calls.push(call);
    at = close < 0 ? text.length : close + TOOL_CALL_CLOSE.length;
  }
  return { content: [text.slice(0, first).trimEnd(), ...outside.map((s) => s.trim())].filter(Boolean).join('\n'), calls };
}

/**
 * parseToolCalls over a streamed reply: `push` returns the text that can go out as content now, holding back what may
 * begin a tool call (Hermes: a partial "<tool_call>", and whitespace before one; JSON: a reply that begins with "{" or
 * the python tag, whole); `end` returns the rest of the content and the calls. The content sent is then exactly
 * parseToolCalls' content of the whole reply.
 */
export class ToolCallStream {
  private text = '';
  private sent = 0;
  private inCalls = false;
  private plain = false;

  /** `names`: the tools offered (see parseToolCalls). */
  constructor(private readonly format: ToolCallFormat = 'hermes', private readonly names?: readonly string[]) {
    checkFormat(format, names, 'ToolCallStream');
  }

  push(piece: string): string {
    if (typeof piece !== 'string') throw new Error(`ToolCallStream: push takes the reply's next piece of text, got ${shown(piece)}`);
    this.text += piece;
    if (this.inCalls) return '';
    if (this.format === 'json') {
      if (!this.plain) {
        const s = this.text.trimStart();
        if (!s || PYTHON_TAG.startsWith(s)) return ''; // not decided yet
        if (jsonStart(s)?.startsWith('{') ?? true) { this.inCalls = true; return ''; }
        this.plain = true;
      }
      return this.take(this.text.length);
    }
    const open = this.text.indexOf(TOOL_CALL_OPEN, this.sent);
    if (open >= 0) this.inCalls = true;
    let until = open >= 0 ? open : this.text.length;
    if (open < 0) { // a suffix that may still become "<tool_call>"
      for (let k = Math.min(TOOL_CALL_OPEN.length - 1, until - this.sent); k > 0; k--) if (TOOL_CALL_OPEN.startsWith(this.text.slice(until - k))) { until -= k; break; }
    }
    until = this.sent + this.text.slice(this.sent, until).trimEnd().length; // whitespace waits for what follows it
    return this.take(until);
  }

  end(): ParsedReply {
    const parsed = parseToolCalls(this.text, this.format, this.names);
    return { content: parsed.content.slice(this.sent), calls: parsed.calls };
  }

  private take(until: number): string {
    const out = this.text.slice(this.sent, until);
    this.sent = Math.max(this.sent, until);
    return out;
  }
}

/** @deprecated toolCallFormat(source) === 'hermes' (kept for callers of 0.1's name). */
export const hermesTemplate = (source: string | undefined): boolean => toolCallFormat(source) === 'hermes';

/** Whether a chat is given tools, as transformers decides which template renders it (an empty list counts). */
export const toolsGiven = (tools: unknown): boolean => tools !== undefined && tools !== null;

/** The template that renders a call with these tools (the "tool_use" one when given any, as transformers picks it). */
export const templateFor = (tok: { chatTemplate?: string; toolUseTemplate?: string }, tools: unknown): string | undefined =>
  (toolsGiven(tools) && tok.toolUseTemplate !== undefined ? tok.toolUseTemplate : tok.chatTemplate);

/**
 * Tools, tool calls and tool results given to a chat template that never reads them would be dropped (or printed as
 * a turn of an unknown role) unsaid: refused, naming what the template lacks. (Which format its calls take is the
 * caller's: see toolCallFormat.)
 */
export function checkToolsRendered(template: string | undefined, messages: readonly ChatMessage[], tools: unknown, toolsName: string, where: string): void {
  if (template === undefined) return;
  const lacks = (what: string, read: RegExp) => { if (!read.test(template)) throw new Error(`${where}: the chat template never reads ${what}, so it would drop them; this model's template has no tool calling`); };
  if (tools !== undefined && tools !== null && !(Array.isArray(tools) && !tools.length)) lacks(`tools (${toolsName})`, /\btools\b/);
  if (messages.some((m) => m.tool_calls?.length)) lacks("an assistant message's tool_calls", /\btool_calls\b/);
  if (messages.some((m) => m.role === 'tool')) lacks('tool messages (role "tool")', /(['"])tool\1/);
}

/**
 * Numbers of tool-call arguments that JavaScript would print otherwise than Python does: an integer beyond 2^53
 * (Python keeps it exact), a float such as 20.0 or 5e-7 (Python writes 20.0 and 5e-07). Transformers renders them
 * as Python prints them, so to render the same prompt (and give the model back a call as it wrote it), the arguments'
 * JSON text is kept beside the object parsed from it (argumentsObject), and the chat template is given such numbers
 * as strings holding a mark, Python's text and an end (markedNumbers), which the rendered prompt then prints as that
 * text (pythonNumbers). The mark begins with a control character, which tojson escapes: a value printed by tojson
 * and one printed bare (inside the template's own quotes, say) are told apart.
 */
const MARK = `\u0001edgereasonnum${randomUUID().replace(/-/g, '').slice(0, 12)}n`;
const MARKED = new RegExp(`"\\\\u0001${MARK.slice(1)}([^_]+)_"|${MARK}([^_]+)_`, 'g');
/** A mark left in the rendered prompt otherwise (a template that changed the value's text: |upper, a slice). */
const LEFT = new RegExp(MARK.slice(1), 'i');
/** The JSON text each arguments object was parsed from (argumentsObject). */
const SOURCES = new WeakMap<object, string>();

/** A float as Python's repr (and json.dumps) writes it: the shortest digits, "1.0", "1e-05", "1.5e+16". */
export function pythonFloat(x: number): string {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? 'NaN' : x > 0 ? 'Infinity' : '-Infinity';
  const [mantissa, exp] = Math.abs(x).toExponential().split('e'), e = Number(exp), digits = mantissa.replace('.', '');
  const sign = x < 0 || Object.is(x, -0) ? '-' : '';
  if (e < -4 || e >= 16) return `${sign}${digits[0]}${digits.length > 1 ? `.${digits.slice(1)}` : ''}e${e < 0 ? '-' : '+'}${String(Math.abs(e)).padStart(2, '0')}`;
  if (e < 0) return `${sign}0.${'0'.repeat(-e - 1)}${digits}`;
  const whole = digits.slice(0, e + 1).padEnd(e + 1, '0'), fraction = digits.slice(e + 1);
  return `${sign}${whole}.${fraction || '0'}`;
}

/**
 * The numbers (outside strings) of a JSON text that JavaScript would print otherwise than Python: where each is, and
 * Python's text of it.
 */
function unlikeNumbers(text: string): { at: number; length: number; python: string; integer: boolean }[] {
  const out: { at: number; length: number; python: string; integer: boolean }[] = [];
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '"') { i = stringEnd(text, i); continue; }
    if (!/[-\d]/.test(text[i]) || /[\d.eE+-]/.test(text[i - 1] ?? '')) continue; // not within a number (its fraction or exponent)
    const m = /-?\d+(\.\d+)?([eE][+-]?\d+)?/y;
    m.lastIndex = i;
    const found = m.exec(text);
    if (!found) continue;
    const n = Number(found[0]), float = found[1] !== undefined || found[2] !== undefined;
    const python = float ? pythonFloat(n) : Number.isSafeInteger(n) ? undefined : found[0];
    if (python !== undefined && python !== JSON.stringify(n)) out.push({ at: i, length: found[0].length, python, integer: !float });
    i += found[0].length - 1;
  }
  return out;
}

/**
 * A value parsed from JSON text kept by keepSource or argumentsObject, parsed again with its numbers that JavaScript
 * would print otherwise than Python marked (see MARK); undefined when it holds none (or its text was not kept).
 */
export function markedValue(value: unknown): unknown {
  const text = sourceOf(value), unlike = text === undefined ? [] : unlikeNumbers(text);
  if (!unlike.length) return undefined;
  let json = '', from = 0;
  for (const u of unlike) { json += `${text!.slice(from, u.at)}${JSON.stringify(MARK + u.python + '_')}`; from = u.at + u.length; }
  return JSON.parse(json + text!.slice(from));
}

/** Messages whose tool calls' arguments hold numbers JavaScript would print otherwise than Python, with those marked (markedValue); undefined when none does. */
export function markedNumbers(messages: readonly ChatMessage[]): ChatMessage[] | undefined {
  let changed = false;
  const marked = messages.map((m) => {
    if (!m.tool_calls?.length) return m;
    const calls = m.tool_calls.map((c) => {
      const args = markedValue(c.function.arguments);
      if (args === undefined) return c;
      changed = true;
      return { ...c, function: { ...c.function, arguments: args as Record<string, unknown> } };
    });
    return { ...m, tool_calls: calls };
  });
  return changed ? marked : undefined;
}

/** The JSON text a value was parsed from, where it was kept (keepSource, argumentsObject). */
const sourceOf = (value: unknown): string | undefined => (value && typeof value === 'object' ? SOURCES.get(value) : undefined);

/** Keeps the JSON text `value` was parsed from (a request's or a dataset line's tools: topLevelText), so that a chat template prints its numbers as Python does. */
export function keepSource(value: unknown, text: string | undefined): void {
  if (value && typeof value === 'object' && text !== undefined) SOURCES.set(value, text);
}

/** In the JSON text of an object (valid JSON), the text of a key's value at its top level (the last, as JSON.parse keeps it); undefined when absent. */
export function topLevelText(text: string, key: string): string | undefined {
  let i = text.indexOf('{') + 1, found: string | undefined;
  const blanks = () => { while (/\s/.test(text[i] ?? '')) i++; };
  for (blanks(); text[i] === '"'; blanks()) {
    const keyEnd = stringEnd(text, i), k = JSON.parse(text.slice(i, keyEnd + 1)) as string;
    i = keyEnd + 1;
    blanks();
    i++; // the ":"
    blanks();
    const start = i, c = text[i];
    if (c === '{' || c === '[') i = valueEnd(text, i);
    else if (c === '"') i = stringEnd(text, i) + 1;
    else while (i < text.length && !/[,}\s]/.test(text[i])) i++;
    if (k === key) found = text.slice(start, i);
    blanks();
    if (text[i] === ',') i++;
  }
  return found;
}

/** A prompt rendered from markedNumbers' messages, with the marks printed as Python prints the numbers; undefined if a mark was printed otherwise (changed by the template). */
export function pythonNumbers(rendered: string): string | undefined {
  const out = rendered.replace(MARKED, (_, quoted, bare) => quoted ?? bare);
  return LEFT.test(out) ? undefined : out;
}

/**
 * JSON text of a record (a TRL dataset line) whose message lists hold tool calls, or whose tools came with their
 * text: their numbers written as Python prints them, as the file they were read from wrote them (20.0, not 20; an
 * integer beyond 2^53 exactly).
 */
export function jsonWithPythonNumbers(record: Record<string, unknown>): string {
  let changed = false;
  const marked = Object.fromEntries(Object.entries(record).map(([k, v]) => {
    const m = markedValue(v) ?? (Array.isArray(v) && v.every((x) => x && typeof x === 'object') ? markedNumbers(v as ChatMessage[]) : undefined);
    if (m) changed = true;
    return [k, m ?? v];
  }));
  return (changed && pythonNumbers(JSON.stringify(marked))) || JSON.stringify(record);
}

/** The first integer of a tool call's arguments (as JSON text) that a JavaScript number cannot hold exactly, if any. */
export function inexactInteger(messages: readonly ChatMessage[]): string | undefined {
  for (const m of messages) {
    for (const c of m.tool_calls ?? []) {
      const text = sourceOf(c.function.arguments), big = text === undefined ? undefined : unlikeNumbers(text).find((u) => u.integer);
      if (big) return big.python;
    }
  }
  return undefined;
}

/**
 * Tool-call arguments given as JSON text, parsed (the error names `where` and the text); the text is kept beside the
 * object, so that a chat template renders its numbers as Python prints them (markedNumbers).
 */
export function argumentsObject(text: string, where: string): Record<string, unknown> {
  const v = jsonObject(text);
  if (!v) throw new Error(`${where} must be the JSON text of an object, got ${shown(text)}`);
  SOURCES.set(v, text);
  return v;
}

/**
 * A message as a chat template reads it: optional fields that are null (or undefined) are left out, as absent
 * (Llama 3's template asks `'tool_calls' in message`), and tool-call arguments given as JSON text become objects, as
 * transformers expects them (templates print them with tojson).
 */
export function templateMessage(message: ChatMessage): ChatMessage {
  const OPTIONAL = ['tool_calls', 'reasoning_content', 'tool_call_id', 'name'];
  const m = OPTIONAL.some((k) => Object.hasOwn(message, k) && message[k as keyof ChatMessage] == null)
    ? Object.fromEntries(Object.entries(message).filter(([k, v]) => !OPTIONAL.includes(k) || v != null)) as unknown as ChatMessage : message;
  if (!m.tool_calls?.some((c) => typeof c.function.arguments === 'string')) return m;
  return { ...m, tool_calls: m.tool_calls.map((c) => ({ ...c, function: { ...c.function, arguments: typeof c.function.arguments === 'string' ? argumentsObject(c.function.arguments, 'tool call arguments') : c.function.arguments } })) };
}

/** A message's tool_calls, checked: an assistant's, each { function: { name, arguments } } (`at` names the message). */
export function checkToolCalls(m: ChatMessage, at: string): void {
  if (m.tool_calls === undefined || m.tool_calls === null) return; // null: absent, as JSON dumps of SDK objects write it
  if (m.role !== 'assistant') throw new Error(`${at} (role ${JSON.stringify(m.role)}) has tool_calls; only an assistant message makes tool calls`);
  if (!Array.isArray(m.tool_calls)) throw new Error(`${at} has tool_calls that is not a list`);
  m.tool_calls.forEach((c, j) => {
    const call = `${at} tool_calls[${j}]`, f = c?.function;
    if (!f || typeof f !== 'object' || typeof f.name !== 'string' || !f.name) throw new Error(`${call} must be { function: { name, arguments } } with a function name`);
    const args = f.arguments;
    if (typeof args === 'string') argumentsObject(args, `${call}.function.arguments`);
    else if (!args || typeof args !== 'object' || Array.isArray(args)) throw new Error(`${call}.function.arguments must be an object or the JSON text of one, got ${shown(args)}`);
  });
}

/** Each token's text alone, by its first character, decoded once per tokenizer (toolNameConstraint looks them up at every constrained step). */
const TOKEN_TEXTS = new WeakMap<object, Map<string, [id: number, text: string][]>>();

/**
 * For a reply begun with a call's opening up to its name (`{"name": "`, tool_choice "required" with several tools):
 * the tokens that keep it spelling one of `names` and its closing quote (a token may run past the quote, as `",`
 * does); undefined, no constraint, once a name is closed. OpenAI's "required" answers with one of the tools.
 */
export function toolNameConstraint(tok: { vocabSize: number; decode(ids: readonly number[]): string }, names: readonly string[]): (tokens: readonly number[]) => readonly number[] | undefined {
  const ends = names.map((n) => `${n}"`);
  let byFirst = TOKEN_TEXTS.get(tok);
  if (!byFirst) {
    TOKEN_TEXTS.set(tok, byFirst = new Map());
    for (let id = 0; id < tok.vocabSize; id++) {
      const t = tok.decode([id]);
      if (t) { const list = byFirst.get(t[0]); if (list) list.push([id, t]); else byFirst.set(t[0], [[id, t]]); }
    }
  }
  // Stateless (one function serves every row of a request): each allowed token adds a character at least, so past
  // the longest name and its quote the name is closed, and only that many tokens are ever decoded.
  const longest = Math.max(...ends.map((e) => e.length));
  return (tokens) => {
    if (tokens.length > longest) return undefined;
    const sofar = tok.decode(tokens);
    if (ends.some((e) => sofar.startsWith(e))) return undefined;
    // What each name still needs; a token is allowed when it begins that, or is all of it and more.
    const rest = ends.filter((e) => e.startsWith(sofar)).map((e) => e.slice(sofar.length)), allow = new Set<number>();
    for (const first of new Set(rest.map((r) => r[0]))) {
      for (const [id, t] of byFirst!.get(first) ?? []) if (rest.some((r) => r.startsWith(t) || t.startsWith(r))) allow.add(id);
    }
    return allow.size ? [...allow] : undefined;
  };
}

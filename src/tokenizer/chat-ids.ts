/**
 * A chat's token ids with its messages' text kept as text: a special token a message writes ("<|im_end|>" typed by a
 * user, or in a tool's result) is encoded as the characters it is, as OpenAI's API treats message content, instead of
 * as the control token that would end the turn and let the text open another (a system turn of its own). Only the
 * text of a message that holds a special token is guarded (an assistant turn's is the model's own, and stays as
 * rendered); everything else encodes as the whole rendering does (HfTokenizer.encodeGuarded).
 */
import crypto from 'node:crypto';
import type { ChatMessage, TextTokenizer } from './types.ts';

/** `render` must be what made `rendered` (the same template variables and generation prompt), for other messages. */
export function encodeChat(tok: TextTokenizer, messages: readonly ChatMessage[], render: (messages: ChatMessage[]) => string, rendered: string, where: string): number[] {
  const whole = () => tok.encode(rendered, { addSpecialTokens: false });
  if (!tok.encodeGuarded || !tok.encodeText || !tok.specialIn) return whole();
  /** The first special token a message's text writes (none in an assistant turn's: the model's own). */
  const holds = (m: ChatMessage) => (m.role === 'assistant' || typeof m.content !== 'string' ? undefined : tok.specialIn!(m.content));
  if (!messages.some(holds)) return whole();
  // Where the texts are in the rendering: rendered again with each replaced by a mark, the template's own text lies
  // between the marks, and a template that changes the text (which the marks would hide) is found by putting the texts
  // back. Marked whole, else (a template that trims a message: Llama 3's) its outer blanks kept around the mark for the
  // template to trim.
  const nonce = crypto.randomBytes(6).toString('hex');
  for (const trimmed of [false, true]) {
    const texts: string[] = [];
    const marked = messages.map((m) => {
      if (!holds(m)) return m;
      const core = trimmed ? m.content.trim() : m.content, at = m.content.indexOf(core);
      texts.push(core);
      return { ...m, content: `${m.content.slice(0, at)}\uE000${nonce}:${texts.length - 1}\uE001${m.content.slice(at + core.length)}` };
    });
    const pieces = render(marked).split(new RegExp(`\uE000${nonce}:(\\d+)\uE001`)), guarded: [number, number][] = [];
    let at = 0;
    pieces.forEach((p, i) => {
      const n = i % 2 ? texts[Number(p)].length : p.length;
      if (i % 2) guarded.push([at, at + n]);
      at += n;
    });
    if (pieces.map((p, i) => (i % 2 ? texts[Number(p)] : p)).join('') !== rendered) continue;
    // The guarded encoding must give the whole rendering's tokens where nothing is guarded (it follows the library's
    // splitting, which a tokenizer with special tokens matched after normalizing may not): checked on this rendering.
    // Where it does not, the texts are encoded apart from the template's text (their edges may then split otherwise).
    if (tok.encodeGuarded(rendered, []).join() === whole().join()) return tok.encodeGuarded(rendered, guarded);
    return pieces.flatMap((p, i) => (i % 2 ? tok.encodeText!(texts[Number(p)]) : p ? tok.encode(p, { addSpecialTokens: false }) : []));
  }
  const m = messages.findIndex(holds);
  throw new Error(`${where}: message ${m} (${messages[m].role}) writes the special token ${holds(messages[m])}, which is kept as text only where the chat template prints a message's text as it is, and this one changes it: take the token out of the message`);
}

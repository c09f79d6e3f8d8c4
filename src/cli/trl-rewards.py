r"""Budget reward for TRL GRPO (written by edgereason export-trl; the same reward as edgereason's train-rl):
correct - min(1, lam * max(0, thinking - budget) / budget), and -1 when the thinking segment never closes. Thinking
runs to the first </think>; the reply is what follows the last one. Graded as train-rl's --grader __GRADER__ grades
(a port of edgereason's src/tasks/grade.ts, checked against it by edgereason's tests):
- synthetic: a numeric gold needs the reply's last "#### n" line (the number alone); any other gold must equal
  the reply exactly (trimmed);
- gsm8k: the last answer the reply states ("#### n", "the answer is n", "Answer: n", \boxed{n}, which a later check
  that starts with words does not replace; after the last "=" of a worked expression; LaTeX fractions and spacing read
  as numbers; a hedged value such as "18 or 19" or "at least 18" is none), else its last number, equal to the gold."""
import re

LAMBDA = __LAMBDA__
GRADER = "__GRADER__"
TOKENIZER = None  # set by train_grpo.py; without it thinking length is counted in whitespace-separated words
A = re.ASCII  # \d and \w as in JavaScript: ASCII only
NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+(?!\d|\.\d))?|(?<![\w.])-?\.\d+", A)
# a worked expression before "=" from its first number ("5 + 3", "5 hours * 60", "2(3 + 4)"), not "18 because 16 - 3 = 13"
WORKED = re.compile(r"(?:[^\d]*\d[\d,.]*(?:\s*%|\s+[A-Za-z]+(?:/[A-Za-z]+)?){0,2}\s*(?:(?:[-+*/×÷^·]|\\(?:times|cdot|div)\b|\b(?:x|times|of|plus|minus|(?:divided|multiplied)\s+by)\b)\s*\(?|\()-?\$?\d|[^\d]*\b(?:[Hh]alf|[Tt]wice|[Dd]ouble|[Tt]riple|[Tt]hrice)\s+(?:of\s+)?\$?\d|[^\d]*\\(?:[dt]?frac|sqrt)\b)", A)
HEADING = re.compile(r"\d+(?:[.)]\s+[A-Za-z*`$]|:\s+[A-Za-z]|\s+[-–]\s+(?:[A-Z`]|\*\*[A-Z]))", A)  # "#### 2. Money": a numbered heading
# a hedged or qualified value ("18 or 19", "between 18 and 19", "not 18", "at least 18", "18 or more"): no one value; ", or" restates
HEDGED = re.compile(r"(?:[^\d]*?\b(?:not|no|either|between|nearly|almost|over|under|at\s+(?:least|most)|(?:more|less|fewer)\s+than)\s+[$\\(]*-?\.?\d|[^\d]*\d(?:[\d.,]*\d)?(?:\s+[A-Za-z]+)?\s*(?:(?:or|to|and)\s+\$?-?\.?\d|[–—]\s*\$?\d|-\s*\$?\d|or\s+(?:more|less|fewer|so)\b))", re.I | A)
COMPARISON = re.compile(r"[\s*$]*-?[\d.,]+\s+(?:[A-Za-z]+\s+)?(?:more|less|fewer|greater|higher|lower|larger|smaller|bigger)\s+than\b", re.I | A)


def _text(completion):
    return completion if isinstance(completion, str) else "".join(m.get("content", "") for m in completion)


def _float(s):
    """A plain number: "$", thousands commas, a trailing "%" or ".", a unit in parentheses, "a/b" and "-(a/b)"."""
    t = re.sub(r"(?<!\s)\s*\(([^()]*)\)$", lambda m: "" if re.search(r"[A-Za-z]", m.group(1)) else m.group(0), str(s).strip(), flags=A).replace("\\$", "").replace("$", "")
    t = re.sub(r"(\d),(?=\d{3}\b)", r"\1", t, flags=A)
    t = re.sub(r"[.%]$", "", t).strip()
    neg = re.fullmatch(r"-\((.*)\)", t)
    if neg:
        t = "-" + neg.group(1)
    if re.fullmatch(r"-?(\d+(\.\d+)?|\.\d+)", t, A):
        return float(t)
    frac = re.fullmatch(r"(-?\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)", t, A)
    return float(frac.group(1)) / float(frac.group(2)) if frac and float(frac.group(2)) != 0 else None


def _first_number(s):
    m = NUMBER.search(s)
    return _float(m.group(0)) if m else None


def _last_boxed(text):
    """Contents of the last \\boxed{...} (nested braces) or \\boxed x / \\fbox{...}; None if none or unclosed."""
    i = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if i < 0:
        return None
    j = i + (6 if text.startswith("\\boxed", i) else 5)
    if j < len(text) and text[j] == " ":
        m = re.match(r" *([^\s$]+)", text[j:])
        return m.group(1) if m else None
    if j >= len(text) or text[j] != "{":
        return None
    depth = 0
    for k in range(j, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return text[j + 1:k]
    return None


def _normalize_math(s):
    """Strips LaTeX presentation so a value can be read (the parts of grade.ts's normalizeMath numbers need)."""
    t = re.sub(r"(?<!\\)\\(?:displaystyle|!|,|;|:|quad|qquad|\s)", " ", s.strip())
    t = re.sub(r"\\[()\[\]]", " ", t)
    t = re.sub(r"\\[dt]frac", r"\\frac", t)
    t = re.sub(r"\\(?:left|right)(?![a-z])", "", t)
    t = re.sub(r"\^\s*\{?\\circ\}?|\\circ|°", "", t)
    t = re.sub(r"\\?%", "", t)
    t = re.sub(r"\\?\$", "", t)
    whole = re.fullmatch(r"\\(?:text|textbf|mbox|mathrm|mathbf|boldsymbol)\{([^{}]*)\}", t)
    if whole:
        t = whole.group(1)
    else:
        no_units = re.sub(r"\s*\\(?:text|textbf|mbox|mathrm)\{[^{}]*\}(?:\^\{?\d\}?)?", "", t, flags=A).strip()
        if no_units:
            t = no_units
    t = re.sub(r"^[A-Za-z]\s*(?:=|\\in)\s*", "", t)
    t = re.sub(r"\s+", "", t)
    t = re.sub(r"\.$", "", t)
    t = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", t, flags=A)
    t = re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", t, flags=A)
    t = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", t, flags=A)
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", t, A):
        t = t.replace(",", "")
    return re.sub(r"^(-?)\.(\d)", r"\g<1>0.\2", t, flags=A)


def _latex_number(t):
    if re.fullmatch(r"-?(\d+(\.\d+)?|\.\d+)", t, A):
        return float(t)
    ab = re.fullmatch(r"(-?\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)", t, A)
    if ab and float(ab.group(2)) != 0:
        return float(ab.group(1)) / float(ab.group(2))
    f = re.fullmatch(r"(-?)(\d+)?\\frac\{(-?\d+(?:\.\d+)?)\}\{(\d+(?:\.\d+)?)\}", t, A)
    if f and float(f.group(4)) != 0:
        return (-1 if f.group(1) else 1) * (float(f.group(2) or 0) + float(f.group(3)) / float(f.group(4)))
    return None


def _stated_number(phrase, boxed):
    n = _float(phrase)
    if n is not None:
        return n
    if boxed or "\\" in phrase:
        span = None if boxed else re.match(r"\$((?:[^$\\]|\\.)+)\$|\\\((.+?)\\\)", phrase)
        t = _normalize_math(span.group(1) or span.group(2) if span else phrase)
        n = _latex_number(t)
        if n is None:
            m = re.fullmatch(r"\((.+)\)", t)
            n = _latex_number(m.group(1)) if m else None
        if n is not None or boxed or re.search(r"\\(?:frac|sqrt)|\^", phrase):
            return n
    return None if re.match(r"\d+:\d+", phrase.strip(), A) or HEDGED.match(phrase) else _first_number(phrase)


def _stated(reply):
    """The last explicit answer's number (None when that answer holds none); the last number when there is none."""
    found = []
    for m in re.finditer(r"####[ \t]*([^\n]*)", reply):
        line = m.group(1).strip()
        if (re.match(r"\$?-?\(?\.?\d", line, A) and not HEADING.match(line)) or HEDGED.match(line):  # "#### not 18": stated, and hedged
            found.append((m.start(), line, False, True))
    for m in re.finditer(r"\banswer\s+is\**:?\s*(?=([^\n]*))|(?:^|\n)[ \t*#]*(?:final\s+)?answer\s*\**:\**\s*([^\n]*)", reply, re.I | A):
        rest = m.group(1) if m.group(1) is not None else m.group(2)
        rest = re.sub(r"^(?:the\s+)?(?:final\s+)?answer\s+is\**:?\s*", "", rest, flags=re.I | A)  # Minerva's "Final Answer: The final answer is ..."
        if m.group(1) is not None and re.search(r"\b(?:this|that|which|each|an|one)\s+$", reply[:m.start()], re.I | A):
            continue  # "this answer is 2 more than ..."
        if COMPARISON.match(rest):
            continue  # "the answer is 2 dollars more than yesterday's": a comparison
        box = _last_boxed(rest)
        if box is not None:
            phrase = box
        else:
            cut = next((d for d in re.finditer(r"\.\s+(?=[A-Z])", rest) if re.search(r"\d", rest[:d.start()], A)), None)
            phrase = rest[:cut.start()] if cut else rest
            eq = phrase.find("=")
            if eq >= 0 and (WORKED.match(phrase[:eq]) or WORKED.match(re.sub(r"^.*:\s", "", phrase[:eq]))):
                phrase = phrase[phrase.rfind("=") + 1:]
            which = list(re.finditer(r"\b(?:which|that)\s+(?:is|equals|gives|makes)\b", phrase, re.I))  # "2 * 9, which is 18"
            if which:
                w, before = which[-1], phrase[:which[-1].start()].strip()
                if re.search(r"\d", phrase[w.end():], A) and not (re.match(r"\$?-?\d", before, A) and len(NUMBER.findall(before)) == 1):
                    phrase = phrase[w.end():]
        phrase = phrase.replace("*", "").strip()
        if phrase and re.search(r"\d", phrase, A):
            lead = box is not None or re.match(r"[\s*]*(?:\$|\\\(|\\\[)?\s*-?\.?\d", rest, A) is not None
            found.append((m.start(), phrase, box is not None, lead))
    box = _last_boxed(reply)
    if box is not None and box.strip():
        found.append((max(reply.rfind("\\boxed"), reply.rfind("\\fbox")), box, True, True))
    box_at = max(reply.rfind("\\boxed"), reply.rfind("\\fbox")) if box is not None and box.strip() else float("inf")
    found = [f for f in found if f[3] or f[0] < box_at]  # a box outranks a check after it that starts with words
    if found:
        _, phrase, boxed, _ = max(found, key=lambda f: f[0])
        return _stated_number(phrase, boxed)
    nums = NUMBER.findall(reply)
    return _float(nums[-1]) if nums else None


def _hash_answer(reply):
    i = reply.rfind("####")
    return None if i < 0 else _float(reply[i + 4:].split("\n")[0])  # the number alone: not "#### 7 or 8"


def _correct(reply, gold, numeric):
    if GRADER == "synthetic" and not numeric:  # a chat reply's gold: the exact reply
        return reply.strip() == str(gold).strip()
    want = _float(gold)
    got = _hash_answer(reply) if GRADER == "synthetic" else _stated(reply)
    return want is not None and got is not None and abs(got - want) <= 1e-12 * max(1.0, abs(got), abs(want))


def budget_reward(completions, answer, budget, numeric=None, **kwargs):
    rewards = []
    for k, (completion, gold, b) in enumerate(zip(completions, answer, budget)):
        text = _text(completion)
        if "</think>" not in text:
            rewards.append(-1.0)
            continue
        thinking, reply = text.split("</think>", 1)[0], text.rsplit("</think>", 1)[1]
        reply = reply.replace("\u2212", "-").replace("{,}", ",")  # a Unicode minus; LaTeX's 10{,}080
        n = len(TOKENIZER.encode(thinking, add_special_tokens=False)) if TOKENIZER else len(thinking.split())  # before </think>, as train-rl counts
        num = numeric[k] if numeric is not None else _float(gold) is not None
        rewards.append((1.0 if _correct(reply, gold, num) else 0.0) - min(1.0, LAMBDA * max(0, n - b) / b))
    return rewards

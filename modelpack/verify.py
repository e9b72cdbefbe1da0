"""Prove a chat template right: render it, tokenize it with the model's own tokenizer, compare.

`verify()` checks one set of templates against reference conversations:
- the Jinja and the Go template render the same text (and the same ids);
- the rendered text equals the published prompt text, and its ids equal the published ids;
- every special-token-looking string the template writes is a token of the vocabulary;
- every stop string is a single special token, and the token that ends an assistant turn stops
  generation (it is a stop string or the eos token).
`verify_template()` finds templates, tokenizer, stop strings and references for a target (catalogue
name, checkpoint folder, GGUF file, Modelfile, or a bundle in the store); see verify_targets.py.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from modelpack.catalog import CONVENTIONS, Reference
from modelpack.errors import TemplateError
from modelpack.templates import render_go_many, render_jinja
from modelpack.tokenize import Tokenizer

# A string that looks like a special token: <s>, </s>, <bos>, <end_of_turn>, <|im_end|>, [INST] ...
_SPECIAL_LOOKING = re.compile(r"<\|[^<>|\s]{1,48}\|>|</?[A-Za-z][A-Za-z0-9_.-]{0,40}>")
_MAX_MISMATCHES = 5
# A chat to render when there is no reference: the answer "Sure" shows which token ends a turn.
PROBE_CHAT = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Sure"},
              {"role": "user", "content": "Thanks"}]


@dataclass
class Check:
    name: str
    ok: bool
    message: str
    severity: str = "error"  # error: fails the verification; warning/info: reported only
    reference: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Mismatch:
    """One place where tokenized ids differ from the expected ids."""

    reference: str
    source: str  # "jinja" or "go"
    position: int  # index into the expected ids
    expected_ids: list[int]
    expected_pieces: list[str]
    actual_ids: list[int]
    actual_pieces: list[str]
    context: str  # the expected text around the place

    def describe(self) -> str:
        exp = " ".join(f"{i} {p!r}" for i, p in zip(self.expected_ids, self.expected_pieces)) or "(nothing)"
        act = " ".join(f"{i} {p!r}" for i, p in zip(self.actual_ids, self.actual_pieces)) or "(nothing)"
        return f"at token {self.position}: expected {exp}, got {act}; near {self.context!r}"


@dataclass
class VerifyReport:
    target: str
    checks: list[Check] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    tokenizer: str | None = None
    convention: str | None = None
    model: str | None = None  # the catalogue entry the references came from

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks if c.severity == "error")

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok and c.severity == "error"]

    def add(self, name: str, ok: bool, message: str, **kw) -> Check:
        check = Check(name, ok, message, **kw)
        self.checks.append(check)
        return check

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "ok": self.ok, "model": self.model, "tokenizer": self.tokenizer,
                "convention": self.convention, "checks": [asdict(c) for c in self.checks],
                "mismatches": [asdict(m) for m in self.mismatches]}

    def format(self) -> str:
        """The report as lines a person reads."""
        head = f"{self.target}: {'OK' if self.ok else 'FAILED'}"
        facts = [f"model {self.model}" if self.model else None,
                 f"tokenizer {self.tokenizer}" if self.tokenizer else "no tokenizer (ids not checked)",
                 f"convention {self.convention}" if self.convention else None]
        lines = [head, "  " + "; ".join(f for f in facts if f)]
        for c in self.checks:
            mark = "ok  " if c.ok else ("FAIL" if c.severity == "error" else c.severity.upper()[:4])
            lines.append(f"  {mark} {c.name}: {c.message}")
            for extra in c.details.get("lines", []):
                lines.append(f"         {extra}")
        return "\n".join(lines)


# ---------------------------------------------------------------- diffs

def text_diff(expected: str, actual: str, *, width: int = 30, labels: tuple[str, str] = ("expected", "got")) -> str:
    """Where two texts first differ, with the text around it."""
    n = next((i for i, (a, b) in enumerate(zip(expected, actual)) if a != b), min(len(expected), len(actual)))
    lo = max(0, n - width)
    return (f"first difference at character {n}: {labels[0]} {expected[lo:n + width]!r}, "
            f"{labels[1]} {actual[lo:n + width]!r}")


def id_mismatches(tok: Tokenizer, expected: list[int], actual: list[int], *, reference: str,
                  source: str) -> list[Mismatch]:
    out = []
    ops = difflib.SequenceMatcher(a=expected, b=actual, autojunk=False).get_opcodes()
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal":
            continue
        ctx = tok.decode(expected[max(0, i1 - 4):min(len(expected), i2 + 4)])
        out.append(Mismatch(reference, source, i1, expected[i1:i2], [tok.piece(i) for i in expected[i1:i2]],
                            actual[j1:j2], [tok.piece(i) for i in actual[j1:j2]], ctx))
        if len(out) >= _MAX_MISMATCHES:
            break
    return out


def _strip_bos(text: str, bos: str | None) -> str:
    return text[len(bos):] if bos and text.startswith(bos) else text


def _suggest(name: str, tok: Tokenizer) -> str | None:
    """The special token of the vocabulary that `name` most likely meant."""
    norm = re.sub(r"[^a-z0-9]", "", name.lower())
    for special in tok.specials:
        if re.sub(r"[^a-z0-9]", "", special.lower()) == norm and special != name:
            return special
    close = difflib.get_close_matches(name, list(tok.specials), n=1, cutoff=0.75)
    return close[0] if close and close[0] != name else None


# ---------------------------------------------------------------- the checks

def _diagnose(tok: Tokenizer, ref: Reference, text: str, expected: list[int], actual: list[int],
              convention: str, mism: list[Mismatch]) -> list[str]:
    """Sentences that say why ids differ, when a cause can be named."""
    hints = []
    published_text = tok.decode(expected)
    missing = [m["content"] for m in ref.messages if m.get("content") and m["content"] not in published_text]
    if missing:
        hints.append(f"the published ids are not of this conversation: they decode to {published_text!r}, "
                     f"which does not contain {missing[0]!r}")
    for other in CONVENTIONS:
        if other not in (convention, "piecewise") and tok.encode(text, convention=other) == expected:
            hints.append(f"the ids match when tokenized with the {other!r} convention instead of {convention!r}")
    if convention == "legacy-false" and tok.encode(text, convention="split-special") == expected:
        hints.append("transformers' legacy=False drops the space SentencePiece puts before text that follows a "
                     "special token (e.g. '▁G' becomes 'G'); the published ids assume legacy=True, which is "
                     "also what llama.cpp and Ollama do: set \"legacy\": true in tokenizer_config.json")
    bos = tok.bos_id
    if bos is not None and expected[:1] == [bos] and actual[:1] != [bos]:
        hints.append(f"the ids do not start with BOS {tok.piece(bos)!r} (id {bos}): the Jinja template should begin "
                     f"with {{{{ bos_token }}}}")
    if bos is not None and actual[:2] == [bos, bos] and expected[:2] != [bos, bos]:
        hints.append(f"BOS {tok.piece(bos)!r} comes twice: the runtime adds it already, so the template must not "
                     f"write it")
    if len(actual) < len(expected) and expected[:len(actual)] == actual:
        hints.append(f"the rendering stops early: {tok.decode(expected[len(actual):])!r} is missing at the end "
                     f"(is add_generation_prompt handled?)")
    elif len(actual) > len(expected) and actual[:len(expected)] == expected:
        extra = tok.decode(actual[len(expected):])
        hints.append(f"the rendering has extra text at the end: {extra!r}" if extra.strip() else
                     f"the rendering ends with extra whitespace ({' '.join(repr(tok.piece(i)) for i in actual[len(expected):])})"
                     f": the prompt must end exactly where the model's answer starts")
    for m in mism:
        if m.actual_pieces[:1] == ["▁"] and m.expected_pieces[:1] != ["▁"]:
            hints.append(f"the template writes an extra space at token {m.position} (near {m.context!r})")
            break
        if m.expected_pieces and m.actual_pieces:
            e, a = m.expected_pieces[0], m.actual_pieces[0]
            if e.startswith("▁") and not a.startswith("▁") and e[1:2] == a[:1] and convention == "split-special":
                hints.append(f"a space is missing before {e[1:]!r} (near {m.context!r}): check the template's "
                             f"role prefix, e.g. 'User: ' needs the space after the colon")
                break
            if a.startswith("▁") and not e.startswith("▁") and a[1:2] == e[:1]:
                hints.append(f"the template writes an extra space before {e!r} (near {m.context!r})")
                break
    return hints


def _check_specials(report: Report, tok: Tokenizer, texts: dict[str, str], ref: Reference) -> None:
    contents = [m.get("content", "") for m in ref.messages]
    for source, text in texts.items():
        seen = set()
        for m in _SPECIAL_LOOKING.finditer(text):
            name = m.group(0)
            if name in seen or name in tok.specials or any(name in c for c in contents):
                continue
            seen.add(name)
            ids = tok.encode(name)
            guess = _suggest(name, tok)
            by_id = {v: k for k, v in tok.specials.items()}
            if len(ids) == 1 and ids[0] in by_id:  # the base model's name of a token the vocabulary renamed
                report.add(f"special-tokens[{ref.name}/{source}]", False, f"the {source} template writes "
                           f"{name!r}, but this vocabulary calls that token (id {ids[0]}) {by_id[ids[0]]!r}: "
                           f"write {by_id[ids[0]]!r}", reference=ref.name)
                continue
            msg = (f"the {source} template writes {name!r}, which is not a token of the vocabulary: it becomes "
                   f"{len(ids)} ordinary piece{'s' if len(ids) != 1 else ''} "
                   f"({' '.join(repr(tok.piece(i)) for i in ids)})")
            if guess:
                msg += f"; the vocabulary has {guess!r} (id {tok.specials[guess]})"
            report.add(f"special-tokens[{ref.name}/{source}]", False, msg, reference=ref.name)


def _check_stops(report: Report, tok: Tokenizer | None, stop: list[str], jinja: str | None, go: str | None,
                 bos: str | None, eos: str | None, eot: str | None) -> None:
    if tok is None:
        if eot and eot not in stop and eot != eos:
            report.add("stop[end-of-turn]", False, f"the end-of-turn token {eot!r} is not a stop string "
                       f"(stop: {stop}): generation would run past the end of the answer")
        return
    for s in stop:
        if not s:
            report.add("stop[]", False, "an empty stop string: remove that PARAMETER stop line")
            continue
        ids = tok.encode(s)
        if len(ids) == 1 and ids[0] in tok.specials.values():
            report.add(f"stop[{s}]", True, f"a single special token (id {ids[0]})")
            continue
        guess = _suggest(s, tok)
        msg = (f"stop string {s!r} is {len(ids)} tokens ({' '.join(f'{i} {tok.piece(i)!r}' for i in ids)}), "
               f"not one special token: generation stops only after the model writes that exact text")
        if guess:
            msg += f"; did you mean {guess!r} (id {tok.specials[guess]})?"
        report.add(f"stop[{s}]", False, msg)
    # Which token ends an assistant turn? Render a short chat and look right after the answer.
    probe = PROBE_CHAT
    rendered = None
    try:
        if jinja:
            rendered = _strip_bos(render_jinja(jinja, probe, bos_token=bos or "", eos_token=eos or "",
                                               add_generation_prompt=True), bos)
        elif go:
            rendered = render_go_many([(go, probe, None)])[0]
    except TemplateError:
        return  # already reported by the render checks
    if rendered is None or "Sure" not in rendered:
        return
    after = tok.split_special(rendered[rendered.index("Sure") + len("Sure"):])
    ender = next(((p, i) for p, i in after[:2] if i is not None), None)
    if ender is None:
        report.add("stop[end-of-turn]", False, "the template ends an assistant turn with plain text, not a "
                   "special token: make sure a stop string ends generation", severity="warning")
        return
    piece, token = ender
    stop_ids = {tok.encode(s)[0] for s in stop if len(tok.encode(s)) == 1}
    if token in stop_ids or token == tok.eos_id:
        report.add("stop[end-of-turn]", True, f"assistant turns end with {piece!r} (id {token}), which stops generation")
    else:
        report.add("stop[end-of-turn]", False, f"assistant turns end with {piece!r} (id {token}) but it is neither "
                   f"a stop string ({stop}) nor the eos token: generation would run on past the answer; add "
                   f"PARAMETER stop {piece}")


def training_ids(tok: Tokenizer, fmt: dict[str, Any], messages: list[dict[str, str]],
                 add_generation_prompt: bool = True) -> list[int]:
    """OpenChat's own tokenization (the cards' generate_conversation_template): BOS, then each role
    prefix and each message tokenized apart, the end-of-turn id after every message."""
    eot = tok.specials[fmt["eot"]]
    ids = [tok.specials[fmt["bos"]]] if fmt.get("bos") else []
    for m in messages:
        if m["role"] == "system":
            ids += tok.encode_plain(m["content"]) + [eot]
            continue
        ids += tok.encode_plain(fmt["role_prefix"][m["role"]]) + tok.encode_plain(m["content"]) + [eot]
    if add_generation_prompt:
        ids += tok.encode_plain(fmt["role_prefix"]["assistant"])
    return ids


def _check_training_format(report: VerifyReport, tok: Tokenizer, fmt: dict[str, Any], ref: Reference,
                           ids: list[int], convention: str) -> None:
    try:
        trained = training_ids(tok, fmt, ref.messages, ref.add_generation_prompt)
    except KeyError as err:  # a role or token the training format does not know
        report.add(f"training-format[{ref.name}]", False, f"not comparable with the training format ({err})",
                   severity="info", reference=ref.name)
        return
    if trained == ids:
        report.add(f"training-format[{ref.name}]", True, f"the {convention!r} ids equal those of the model's own "
                   "training code (role prefix and message tokenized apart)", severity="info", reference=ref.name)
        return
    m = id_mismatches(tok, trained, ids, reference=ref.name, source="training")[0]
    report.add(f"training-format[{ref.name}]", False, f"this check uses the {convention!r} convention (llama.cpp, "
               f"Ollama, HF legacy=True); the model's own training code tokenizes role prefix and message apart "
               f"differs (expected: training code, got: template) {m.describe()}", severity="warning",
               reference=ref.name)


def verify(jinja_template: str | None, go_template: str | None, stop: list[str] | None,
           tokenizer: Tokenizer | None, references: list[Reference], *, bos_token: str | None = None,
           eos_token: str | None = None, eot_token: str | None = None, system: str | None = None,
           convention: str | None = None, target: str = "", model: str | None = None,
           training_format: dict[str, Any] | None = None, go_origin: tuple[str, int] | None = None,
           jinja_origin: str | None = None) -> VerifyReport:
    """Check templates against references with a tokenizer (None: text checks only).
    `go_origin`: (file, line) where the Go template starts, so that its errors name the file's line;
    `jinja_origin`: the file the Jinja template came from."""
    tok = tokenizer
    report = VerifyReport(target=target, tokenizer=tok.source if tok else None, model=model)
    if tok is not None:
        if bos_token is None and tok.bos_id is not None:
            bos_token = tok.piece(tok.bos_id)
        if eos_token is None and tok.eos_id is not None:
            eos_token = tok.piece(tok.eos_id)
    jinja_convention = convention or ("legacy-false" if tok is not None and tok.legacy is False
                                      and tok.add_dummy_prefix else None)
    for what, given in (("Jinja chat_template", jinja_template), ("Go TEMPLATE", go_template)):
        if given is not None and not given.strip():
            report.add("templates", False, f"the {what} is empty: every prompt would be rendered as nothing")
    jinja_template = jinja_template if jinja_template and jinja_template.strip() else None
    go_template = go_template if go_template and go_template.strip() else None
    if not jinja_template and not go_template:
        if not report.checks:
            report.add("templates", False, "no template to verify (neither a Jinja chat_template nor a Go TEMPLATE)")
        return report
    if not references:
        report.add("references", False, "no reference conversations with published ids: the templates were "
                   "checked on a probe chat only", severity="warning")
        references = [Reference(name="probe", messages=PROBE_CHAT)]
    # References are the published conversations, without the model's default SYSTEM prompt.
    go_jobs = [(go_template, r.messages, None) for r in references] if go_template else []
    go_texts: list = []
    if go_jobs:
        try:
            go_texts = render_go_many(go_jobs)
        except TemplateError as err:  # one failing job fails them all: the template is wrong
            if go_origin and err.line:
                err = TemplateError(err.message, path=go_origin[0], line=go_origin[1] + err.line - 1)
            go_texts = [err] * len(go_jobs)
    for k, ref in enumerate(references):
        conv = jinja_convention or ref.convention
        report.convention = conv
        texts: dict[str, str] = {}
        if jinja_template and not ref.go_only:
            try:
                texts["jinja"] = render_jinja(jinja_template, ref.messages, bos_token=bos_token or "",
                                              eos_token=eos_token or "",
                                              add_generation_prompt=ref.add_generation_prompt)
            except TemplateError as err:
                where = f"{jinja_origin}: " if jinja_origin else ""
                line = f"chat_template line {err.line}: " if err.line else ""
                report.add(f"render[{ref.name}/jinja]", False, f"{where}{line}{err.message}", reference=ref.name)
        if go_template:
            if isinstance(go_texts[k], TemplateError):
                report.add(f"render[{ref.name}/go]", False, str(go_texts[k]), reference=ref.name)
            else:
                texts["go"] = go_texts[k]
        plain = {s: _strip_bos(t, bos_token) if s == "jinja" else t for s, t in texts.items()}
        if "jinja" in plain and "go" in plain:
            same = plain["jinja"] == plain["go"]
            report.add(f"jinja-vs-go[{ref.name}]", same, "the Jinja and Go templates render the same text" if same
                       else "the Jinja and Go templates render differently: "
                       + text_diff(plain["jinja"], plain["go"], labels=("Jinja", "Go")),
                       reference=ref.name)
        if ref.text is not None:
            for source, text in plain.items():
                same = text == ref.text
                report.add(f"text[{ref.name}/{source}]", same, "renders the reference prompt text" if same
                           else "does not render the reference prompt text: " + text_diff(ref.text, text),
                           reference=ref.name)
        if tok is None:
            continue
        _check_specials(report, tok, plain, ref)
        for source, text in texts.items():
            # HF tokenizes the Jinja output as it is; llama.cpp/Ollama add BOS to the Go output.
            c = conv if source == "jinja" else "split-special"
            ids = tok.encode(text, convention=c, add_bos=(source == "go" and tok.add_bos))
            if training_format and source == "jinja":
                _check_training_format(report, tok, training_format, ref, ids, c)
            if ref.ids is None:
                report.add(f"ids[{ref.name}/{source}]", True, f"{len(ids)} tokens (no published ids to compare)",
                           severity="info", reference=ref.name, details={"ids": ids})
                continue
            if ids == ref.ids:
                report.add(f"ids[{ref.name}/{source}]", True, f"reproduces the {len(ids)} published ids ({c})",
                           reference=ref.name)
                continue
            mism = id_mismatches(tok, ref.ids, ids, reference=ref.name, source=source)
            report.mismatches.extend(mism)
            hints = _diagnose(tok, ref, text, ref.ids, ids, c, mism)
            msg = (f"{source} template tokenized with {c!r} gives {len(ids)} ids, published {len(ref.ids)}; "
                   f"{mism[0].describe() if mism else ''}")
            report.add(f"ids[{ref.name}/{source}]", False, msg, reference=ref.name,
                       details={"lines": [m.describe() for m in mism[1:]] + [f"hint: {h}" for h in hints],
                                "ids": ids, "expected": ref.ids})
    if jinja_template:
        _check_generation_prompt(report, jinja_template, bos_token, eos_token)
    _check_system(report, jinja_template, go_template, system, bos_token, eos_token)
    _check_stops(report, tok, list(stop or []), jinja_template, go_template, bos_token, eos_token, eot_token)
    return report


def _check_generation_prompt(report: VerifyReport, jinja: str, bos: str | None, eos: str | None) -> None:
    """With add_generation_prompt false, a chat that ends with the assistant's answer must end there (only
    end-of-turn tokens may follow): the assistant's prefix belongs under {% if add_generation_prompt %}.
    (Templates like Llama 2's that have no generation prompt at all pass.)"""
    try:
        text = render_jinja(jinja, PROBE_CHAT[:2], bos_token=bos or "", eos_token=eos or "", add_generation_prompt=False)
    except TemplateError:
        return  # reported by the render checks
    if "Sure" not in text:
        return
    tail = text[text.rindex("Sure") + len("Sure"):]
    if re.search(r"\w", _SPECIAL_LOOKING.sub("", tail)):
        report.add("generation-prompt", False, f"with add_generation_prompt false the Jinja template still writes "
                   f"{tail!r} after the assistant's last answer: write the assistant's prefix only when "
                   "add_generation_prompt is true, e.g. {% if add_generation_prompt %}...{% endif %}")


SYSTEM_PROBE = "You are a terse pirate."


def _renders_as_other_role(jinja: str, chat: list[dict[str, str]], text: str, bos: str | None, eos: str | None) -> bool:
    for role in ("user", "assistant"):
        with contextlib.suppress(TemplateError):
            other = [{"role": role, "content": chat[0]["content"]}, *chat[1:]]
            if _strip_bos(render_jinja(jinja, other, bos_token=bos or "", eos_token=eos or ""), bos) == text:
                return True
    return False


def _check_system(report: VerifyReport, jinja: str | None, go: str | None, system: str | None, bos: str | None,
                  eos: str | None) -> None:
    """Do both templates put a system prompt in the prompt, and alike? (Ollama hands a SYSTEM line to
    the template as .System and as a first system message.)"""
    broken = {c.name.rsplit("/", 1)[-1].rstrip("]") for c in report.failures if c.name.startswith("render[")}
    jinja, go = (None if "jinja" in broken else jinja), (None if "go" in broken else go)
    marker = system or SYSTEM_PROBE
    chat = [{"role": "system", "content": marker}, *PROBE_CHAT]
    text: dict[str, str | None] = {}
    if jinja:
        try:
            text["jinja"] = _strip_bos(render_jinja(jinja, chat, bos_token=bos or "", eos_token=eos or ""), bos)
        except TemplateError as err:  # e.g. raise_exception('System role not supported')
            report.add("system", True, f"the Jinja template refuses system messages ({err.message})",
                       severity="info")
            text["jinja"] = None
    if go:
        try:
            text["go"] = render_go_many([(go, PROBE_CHAT, marker)])[0]
        except TemplateError as err:
            report.add("system", False, f"the Go template fails with a system prompt: {err.message}")
            return
    has = {k: v is not None and marker in v for k, v in text.items()}
    if has.get("jinja") and _renders_as_other_role(jinja, chat, text["jinja"], bos, eos):
        has["jinja"] = False  # no system role of its own: a system message becomes a user/assistant turn
    where = "SYSTEM prompt" if system else "system prompt"
    if has.get("jinja") and "go" in has and not has["go"]:
        report.add("system", False, f"the Go template drops the {where} that the Jinja template renders: write it "
                   "with {{ if .System }}...{{ .System }}...{{ end }} or handle .Role \"system\" in "
                   "{{ range .Messages }}")
    elif has.get("go") and text.get("jinja") is not None and not has["jinja"]:
        report.add("system", False, "the Go template renders the system prompt but the Jinja template has no place "
                   "for it (it drops system messages or renders them as another role): render it in both templates "
                   "(message['role'] == 'system' in Jinja) or in neither")
    elif system and not any(has.values()):
        report.add("system", False, f"the model has a SYSTEM prompt but the template{'s drop' if len(has) > 1 else ' drops'} "
                   "it: use {{ .System }} in the Go TEMPLATE (or remove SYSTEM)")
    elif not any(has.values()):
        report.add("system", True, "the templates have no place for a system prompt (system messages are dropped)",
                   severity="warning")
    elif has.get("jinja") and has.get("go") and text["jinja"].count(marker) != text["go"].count(marker):
        report.add("system", False, f"the Go template writes the {where} {text['go'].count(marker)} times, the Jinja "
                   f"template {text['jinja'].count(marker)} times (does the Go template write both .System and the "
                   "system message of .Messages?)")
    elif has.get("jinja") and has.get("go"):
        same = text["jinja"] == text["go"]
        report.add("system", same, f"the Jinja and Go templates render the {where} alike" if same else
                   f"with a {where} the Jinja and Go templates render differently: "
                   + text_diff(text["jinja"], text["go"], labels=("Jinja", "Go")), severity="warning")
    else:
        report.add("system", True, f"the template renders the {where}", severity="info")


Report = VerifyReport


def verify_template(target: str, *, references: list[Reference] | None = None, variant: str | None = None,
                    tokenizer: str | None = None, model: str | None = None,
                    convention: str | None = None) -> VerifyReport:
    """Verify the templates of a catalogue name, checkpoint folder, GGUF file, Modelfile or store bundle."""
    from modelpack.verify_targets import resolve

    job = resolve(target, variant=variant, tokenizer=tokenizer, model=model)
    refs = references if references is not None else job.references
    report = verify(job.jinja_template, job.go_template, job.stop, job.tokenizer, refs, bos_token=job.bos_token,
                  eos_token=job.eos_token, eot_token=job.eot_token, system=job.system, convention=convention,
                  target=target, model=job.model, training_format=job.training_format, go_origin=job.go_origin,
                  jinja_origin=job.jinja_origin)
    if job.misfit:  # the cause of every id mismatch that follows: say it first
        report.checks.insert(0, Check("vocabulary", False, f"the tokenizer is not this model's: {job.misfit}"))
    return report

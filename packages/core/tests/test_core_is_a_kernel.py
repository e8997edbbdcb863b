"""The core is a kernel: no module under packages/core/src/mllm imports a plugin distribution
(or easy_vqa), and none carries a research family's vocabulary (SteerLM's attributes, easy-VQA's
colours and shapes): those live in the plugin distributions."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import mllm

CORE = Path(mllm.__file__).resolve().parent
PLUGIN_PACKAGES = {"easy_vqa", "mllm_data", "mllm_align", "mllm_eval"}
ATTRIBUTE_WORDS = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
EASYVQA_WORDS = ("red", "green", "blue", "black", "gray", "grey", "teal", "brown", "yellow",
                 "circle", "rectangle", "triangle")
# Words the core may use for something else; each entry says where and why.
ALLOWED = {
    ("records.py", "helpfulness"): "Preference's docstring: optional attribute scores (SteerLM's Helpfulness, ...)",
    ("records.py", "correctness"): "the same docstring",
    ("cli/main.py", "red"): "rich console markup of `mllm plugins` ([red]failed to load)",
    ("cli/main.py", "yellow"): "rich console markup of `mllm plugins` ([yellow]clash)",
    ("testing/samples.py", "red"): "the kit's generic sample images (write_image colours)",
    ("testing/samples.py", "green"): "the kit's generic sample images",
    ("testing/samples.py", "blue"): "the kit's generic sample images",
    ("testing/samples.py", "yellow"): "the kit's generic sample images",
    ("testing/samples.py", "rectangle"): "PIL's ImageDraw.rectangle, drawing the sample square",
    ("testing/checks.py", "blue"): "the kit's judge probe question ('Is the sky blue?')",
}


def modules() -> list[Path]:
    found = sorted(CORE.rglob("*.py"))
    assert len(found) > 40, CORE
    return found


def imported_packages(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names.add(str(node.args[0].value).split(".")[0])
    return names


def words(source: str) -> set[str]:
    """Every word of the module: identifiers, strings, docstrings and comments, lower-cased."""
    text = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.NAME, tokenize.STRING, tokenize.COMMENT):
            text.append(token.string)
    return {w.lower() for w in re.findall(r"[A-Za-z]+", " ".join(text))}


def test_no_core_module_imports_a_plugin_distribution():
    offenders = {str(p.relative_to(CORE)): sorted(imported_packages(p.read_text()) & PLUGIN_PACKAGES)
                 for p in modules()}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_core_module_names_the_attribute_or_easyvqa_vocabulary():
    offenders = []
    for path in modules():
        relative = path.relative_to(CORE).as_posix()
        found = words(path.read_text()) & {*ATTRIBUTE_WORDS, *EASYVQA_WORDS}
        offenders += [(relative, word) for word in sorted(found) if (relative, word) not in ALLOWED]
    assert offenders == []


def test_the_checks_themselves_catch_what_they_look_for():
    assert imported_packages("import easy_vqa\nfrom mllm_data.easyvqa import x\n") == {"easy_vqa", "mllm_data"}
    assert imported_packages("importlib.import_module('mllm_align.sft')") == {"mllm_align"}
    assert {"verbosity", "teal"} <= words('x = "Verbosity: 4"  # a teal circle\n')

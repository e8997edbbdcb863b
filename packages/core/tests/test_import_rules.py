"""What may import what: plugin distributions use the core's and each other's public API only.

Every ``.py`` under ``packages/*/src`` and ``examples/*/src`` is parsed (never imported):

- the core (``mllm``) imports no plugin distribution;
- a plugin distribution imports the core as ``from mllm import <names in mllm.__all__>``
  or ``from mllm.testing import <names in mllm.testing.__all__>``, never another module of it;
- it imports another distribution as ``from <package> import <names in its __all__>``,
  never one of its modules.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
CORE = "mllm"


def source_roots() -> dict[str, Path]:
    """Top-level package name -> its folder, for every distribution of the repository."""
    roots = {}
    for src in sorted([*REPO.glob("packages/*/src"), *REPO.glob("examples/*/src")]):
        for package in sorted(src.iterdir()):
            if (package / "__init__.py").is_file():
                roots[package.name] = package
    return roots


def public_names(package: str) -> set[str]:
    try:
        module = importlib.import_module(package)
    except ImportError:  # not installed here: nothing of it may be imported
        return set()
    return set(getattr(module, "__all__", ()))


def violations(source: str, own: str, packages: set[str], public: dict[str, set[str]]) -> list[tuple[int, str]]:
    """(line, what is wrong) for every import in ``source`` (a module of package ``own``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            imported = [(node.module, [alias.name for alias in node.names])]
        else:
            continue
        for module, names in imported:
            top = module.partition(".")[0]
            if top not in packages or top == own:
                continue
            if own == CORE:
                found.append((node.lineno, f"the core imports the plugin distribution {module!r}"))
                continue
            allowed_modules = {CORE: (CORE, "mllm.testing")}.get(top, (top,))
            if module not in allowed_modules:
                found.append((node.lineno, f"imports the private module {module!r}; use `from {top} import ...`"))
                continue
            if names is None:  # `import mllm`: attribute access is checked at run time by the lazy module
                continue
            wanted = public[module]
            private = [name for name in names if name not in wanted]
            if private:
                found.append((node.lineno, f"imports {private} from {module!r}, not in its __all__"))
    return found


def test_no_distribution_imports_a_private_module_or_name_of_another():
    roots = source_roots()
    assert {"mllm", "mllm_data", "mllm_align", "mllm_eval"} <= set(roots)
    public = {name: public_names(name) for name in roots}
    public["mllm.testing"] = public_names("mllm.testing")
    problems = []
    for own, folder in roots.items():
        for path in sorted(folder.rglob("*.py")):
            for line, what in violations(path.read_text(), own, set(roots), public):
                problems.append(f"{path.relative_to(REPO)}:{line}: {what}")
    assert not problems, "imports across distributions must use the public API:\n" + "\n".join(problems)


@pytest.mark.parametrize("package", ["mllm_data", "mllm_align", "mllm_eval"])
def test_each_plugin_distribution_states_its_public_api(package):
    module = importlib.import_module(package)
    assert module.__doc__ and "__all__" in module.__doc__, f"{package}'s docstring must say what others may import"
    assert module.__all__, package
    for name in module.__all__:
        assert getattr(module, name) is not None
        assert f"``{name}``" in module.__doc__, f"{package}'s docstring does not mention {name}"


def test_the_checker_catches_each_kind_of_violation():
    public = {"mllm": {"Turn"}, "mllm.testing": {"example_records"}, "mllm_data": {"format_prompt"}, "mllm_eval": set()}
    packages = {"mllm", "mllm_data", "mllm_eval"}
    source = (
        "from mllm import Turn\n"                          # fine
        "from mllm.testing import example_records\n"       # fine
        "from mllm_data import format_prompt\n"            # fine
        "from mllm.records import Turn\n"                  # 4: a core module
        "from mllm import DataReportX\n"                   # 5: not public
        "import mllm_data.easyvqa\n"                       # 6: another distribution's module
        "from mllm_data import select_rows\n"              # 7: not in its __all__
        "from mllm.testing.samples import write_image\n"   # 8: a kit module
        "from . import sibling\n"                          # fine: relative
    )
    assert [line for line, _ in violations(source, "mllm_eval", packages, public)] == [4, 5, 6, 7, 8]
    assert violations("import mllm_data\n", "mllm", packages, public) == [
        (1, "the core imports the plugin distribution 'mllm_data'")]

"""README.md and docs/ stay in step with the code.

- Every setting Elephant reads from the environment is documented, with its default, in a table row
  of README.md or a docs/*.md page, and no table documents a setting the code no longer reads.
- Every relative link in README.md and docs/*.md points to an existing file, and to an existing
  heading when it names one (``page.md#anchor``, GitHub's anchor rules).
"""

import ast
import re
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
NAME = re.compile(r"(?:DJANGO|ELEPHANT|AWS|DATABASE|REDIS|CELERY)_[A-Z0-9_]+")
# Read by boto3 itself (credentials chain), not by Elephant; documented in prose where relevant.
NOT_OURS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_PROFILE"}
# Settings whose code default is deliberately not printed in the docs, with the reason.
DEFAULT_NOT_SHOWN = {"DJANGO_SECRET_KEY": "the development key is described, not printed"}


def doc_pages() -> list[Path]:
    return [BASE_DIR / "README.md", *sorted((BASE_DIR / "docs").glob("*.md"))]


def setting_sources() -> list[Path]:
    """elephant/settings.py, and the development tools (`make run`'s ELEPHANT_PORT, the stand-in's port)."""
    return [BASE_DIR / "elephant" / "settings.py", *sorted((BASE_DIR / "devtools").glob("*.py"))]


def settings_read() -> dict[str, list]:
    """{name: [literal defaults found in the code]} for every environment variable read.

    A read is any call whose first argument is the variable's name (``env_int("X", 5)``,
    ``os.environ.get("X", "8000")``, ``env.setdefault("X", "10")``); its second argument, when it
    is a literal, is a default the docs must show.
    """
    found: dict[str, list] = {}
    for source in setting_sources():
        for node in ast.walk(ast.parse(source.read_text())):
            if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
                continue
            name = node.args[0].value
            if not (isinstance(name, str) and NAME.fullmatch(name)) or name in NOT_OURS:
                continue
            if name.startswith(("AWS_WEB_", "AWS_SHARED_")):
                continue
            defaults = found.setdefault(name, [])
            if len(node.args) > 1:
                try:
                    defaults.append(ast.literal_eval(node.args[1]))
                except ValueError:
                    pass  # computed (f-string, another setting, an expression): not checked
    return found


def table_rows(text: str) -> dict[str, list[str]]:
    """{setting: [default cell of each row]} for table rows that start with a setting in backticks."""
    rows: dict[str, list[str]] = {}
    for line in strip_code_blocks(text).splitlines():
        match = re.match(r"\|\s*`([A-Z][A-Z0-9_]+)`\s*\|([^|]*)\|", line)
        if match and NAME.fullmatch(match.group(1)):
            rows.setdefault(match.group(1), []).append(match.group(2).strip())
    return rows


def all_rows() -> dict[str, list[tuple[str, str]]]:
    rows: dict[str, list[tuple[str, str]]] = {}
    for page in doc_pages():
        for name, cells in table_rows(page.read_text()).items():
            rows.setdefault(name, []).extend((page.name, cell) for cell in cells)
    return rows


def renderings(value) -> list[str]:
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, int | float):
        forms = [repr(value), f"{value:,}"]
        if float(value).is_integer():
            forms += [str(int(value)), f"{int(value):,}"]
        return forms
    if isinstance(value, list | tuple):
        return [",".join(map(str, value)), ", ".join(map(str, value))]
    return [str(value)]


def shows(cell: str, value) -> bool:
    if value in ("", [], ()):  # "unset", "(none)", "(empty)": any words will do
        return True
    text = cell.replace("`", "")
    for form in renderings(value):
        if isinstance(value, int | float) and not isinstance(value, bool):
            if re.search(rf"(?<![\w.]){re.escape(form)}(?![\w]|\.\d)", text):
                return True
        elif form in text:
            return True
    return False


def test_every_setting_read_from_the_environment_is_documented_with_its_default():
    read = settings_read()
    assert len(read) > 40, sorted(read)
    rows = all_rows()
    missing = sorted(name for name in read if name not in rows)
    assert not missing, f"settings read in the code but in no table of README.md or docs/*.md: {missing}"
    empty = sorted(f"{page}: {name}" for name in read for page, cell in rows[name] if not cell)
    assert not empty, f"table rows without a default: {empty}"
    wrong = []
    for name, defaults in read.items():
        if name in DEFAULT_NOT_SHOWN or not defaults:
            continue
        for page, cell in rows[name]:
            if not any(shows(cell, value) for value in defaults):
                wrong.append(f"{page}: {name} documents {cell!r}, the code says {defaults!r}")
    assert not wrong, "documented defaults that differ from the code:\n" + "\n".join(wrong)


def test_no_table_documents_a_setting_the_code_does_not_read():
    read = settings_read()
    stale = sorted(f"{page}: {name}" for name, cells in all_rows().items() if name not in read for page, _ in cells)
    assert not stale, f"documented settings that nothing reads (removed? renamed?): {stale}"


# --- links ----------------------------------------------------------------------------------

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"""<(?:img|a)\b[^>]*?\b(?:src|href)=["']([^"']+)["']""", re.I)


def strip_code_blocks(text: str) -> str:
    return FENCE.sub("", text)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -1 for repeats."""
    seen: dict[str, int] = {}
    result = set()
    for line in strip_code_blocks(page.read_text()).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def links(page: Path) -> list[str]:
    text = INLINE_CODE.sub("", strip_code_blocks(page.read_text()))
    return LINK.findall(text) + HTML_LINK.findall(text)


def test_every_relative_link_in_the_docs_resolves():
    broken = []
    for page in doc_pages():
        for target in links(page):
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(BASE_DIR)} -> {target}"
            if not resolved.exists():
                broken.append(f"{where}: no such file")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{where}: no such heading")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_checker_sees_links_and_anchors():
    readme = BASE_DIR / "README.md"
    assert "docs/architecture.md" in links(readme)
    assert "processes" in anchors(BASE_DIR / "docs" / "architecture.md")

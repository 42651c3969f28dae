"""Production code never imports devtools, and a production start does not install it."""

import ast
import subprocess
import sys
from pathlib import Path

from tests.test_settings import PRODUCTION, manage

BASE_DIR = Path(__file__).resolve().parent.parent.parent
PRODUCTION_PACKAGES = ["elephant", "meetings", "fleet", "mirror", "signalling"]


def devtools_imports(source: str) -> list[int]:
    """Line numbers of every import of devtools, at module or function level."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in {
            "import_module",
            "__import__",
        }:
            names = [arg.value for arg in node.args[:1] if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
        else:
            continue
        if any(name == "devtools" or name.startswith("devtools.") for name in names):
            found.append(node.lineno)
    return found


def test_the_walk_sees_imports_at_every_level():
    source = (
        "import devtools.stack\n"
        "def f():\n"
        "    from devtools import standin\n"
        "    importlib.import_module('devtools.standin')\n"
        "import devtoolsy, fleet\n"
    )
    assert devtools_imports(source) == [1, 3, 4]


def test_no_production_module_imports_devtools():
    files = [BASE_DIR / "manage.py"]
    for package in PRODUCTION_PACKAGES:
        files += sorted((BASE_DIR / package).rglob("*.py"))
    assert len(files) > 40
    offenders = [
        f"{path.relative_to(BASE_DIR)}:{line}" for path in files for line in devtools_imports(path.read_text())
    ]
    assert not offenders, f"production code imports devtools: {offenders}"


LOADED = (
    "import os, sys; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'elephant.settings'); import django; "
    "django.setup(); import elephant.urls, elephant.asgi, elephant.celery; "
    "from django.conf import settings; from django.core.management import get_commands; "
    "print('devtools' in settings.INSTALLED_APPS, any(m.split('.')[0] == 'devtools' for m in sys.modules), "
    "'ensure_demo_users' in get_commands(), 'fleet_local_setup' in get_commands())"
)


def loaded(env: dict) -> str:
    result = manage("shell", "--no-imports", "-c", LOADED, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_production_settings_do_not_install_or_import_devtools():
    assert loaded(PRODUCTION) == "False False False False"


def test_development_installs_devtools_and_an_operator_can_ask_for_them():
    assert loaded({}) == "True True True True"
    assert loaded(PRODUCTION | {"ELEPHANT_DEV_TOOLS": "true"}) == "True True True True"
    assert loaded({"ELEPHANT_DEV_TOOLS": "false"}) == "False False False False"


def test_python_m_devtools_stack_is_the_make_run_entry_point():
    makefile = (BASE_DIR / "Makefile").read_text()
    assert "$(PY) -m devtools.stack" in makefile
    result = subprocess.run(
        [sys.executable, "-m", "devtools.stack", "--help"], cwd=BASE_DIR, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "Run the whole Elephant system locally." in result.stdout

"""The README documents every setting Elephant reads."""

import re
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def test_every_setting_read_from_the_environment_is_in_the_readme():
    readme = (BASE_DIR / "README.md").read_text()
    sources = [BASE_DIR / "elephant" / "settings.py", BASE_DIR / "elephant" / "stack.py"]
    names = set()
    for source in sources:
        names |= set(re.findall(r'"((?:DJANGO|ELEPHANT|AWS|DATABASE|REDIS|CELERY)_[A-Z0-9_]+)"', source.read_text()))
    names -= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_PROFILE"}
    names = {n for n in names if not n.startswith(("AWS_WEB_", "AWS_SHARED_"))}
    assert len(names) > 40
    missing = sorted(name for name in names if f"`{name}`" not in readme)
    assert not missing, f"settings missing from the README: {missing}"

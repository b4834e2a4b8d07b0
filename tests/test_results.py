"""The committed results are portable and strict: no absolute path of the machine that made them, and
JSON that any parser reads (no NaN or Infinity)."""

import json
import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parent.parent / "results"
ABSOLUTE = re.compile(r"(?<![\w.~-])/(?:work|home|root|tmp|Users|private|var/folders|mnt|opt|srv)/[\w.-]")
TEXT = {".json", ".md", ".yaml", ".ipynb", ".csv", ".txt"}


def committed(suffixes):
    return sorted(p for p in RESULTS.rglob("*") if p.is_file() and p.suffix in suffixes and "smoke" not in p.parts)


def _no_constants(name):
    raise ValueError(f"{name} is not JSON")


@pytest.mark.parametrize("path", committed({".json", ".ipynb"}), ids=lambda p: str(p.relative_to(RESULTS)))
def test_json_is_strict(path):
    json.loads(path.read_text(), parse_constant=_no_constants)


def test_no_absolute_paths():
    found = [f"{p.relative_to(RESULTS)}: {m.group(0)}" for p in committed(TEXT) for m in [ABSOLUTE.search(p.read_text())] if m]
    assert not found, found[:10]


def test_readme_verdicts_match_claims_md():
    """The README's summary of the verdicts is checked against results/claims.md, the numbers it explains."""
    readme = (RESULTS.parent / "README.md").read_text()
    claims = (RESULTS / "claims.md").read_text()
    measured = dict(re.findall(r"^\| (\S+) \| .*? \| \*\*(.+?)\*\* \| ", claims, flags=re.M))
    stated = {}
    for verdict, ids in re.findall(r"^- \*\*(Holds|Does not hold|Inconclusive|Mixed|Confounded|Premise not met|Not measured)\*\*"
                                   r" \(([^)]*)\)", readme, flags=re.M):
        for cid in (i.strip() for i in ids.split(",")):
            stated[cid] = verdict.lower()
    assert stated, "the README states no verdicts"
    assert stated == measured

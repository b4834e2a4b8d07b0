"""claims.md gathers every notebook's claim records; missing claims are listed as not measured."""

import json

from sepo.claims import write_claims
from sepo.stats import effect


def test_write_claims_from_metrics(tmp_path):
    record = {"statement": "SePO beats DPO", "effects": [effect("SePO - DPO", [0.1, 0.2, 0.15]).to_dict()],
              "verdict": "holds", "note": "a note"}
    (tmp_path / "04_main_table").mkdir()
    (tmp_path / "04_main_table" / "metrics.json").write_text(json.dumps({"claims": {"C2": record}}))
    text = write_claims(tmp_path).read_text()
    assert "| C2 | SePO beats DPO | **holds** | `results/04_main_table/` |" in text
    assert "| C1 |" in text and "not measured" in text
    assert "- SePO - DPO: +0.150 [" in text and "(+0.100, +0.200, +0.150)" in text

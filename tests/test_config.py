"""StageConfig: validation, YAML round trip, fingerprints."""

import dataclasses

import pytest

from sepo.config import StageConfig, help_field
from sepo.errors import ConfigError


@dataclasses.dataclass
class DemoConfig(StageConfig):
    k: float = help_field(0.3, help="fraction of tokens kept")
    sizes: tuple = help_field(("small", "large"), help="model sizes")

    def validate(self):
        self._require(0 < self.k <= 1, "k", "must be in (0, 1]")


def test_round_trip_and_fingerprint(tmp_path):
    cfg = DemoConfig(k=0.5)
    cfg.to_yaml(tmp_path / "c.yaml")
    back = DemoConfig.from_yaml(tmp_path / "c.yaml")
    assert back == cfg and back.fingerprint() == cfg.fingerprint()
    assert DemoConfig(k=0.4).fingerprint() != cfg.fingerprint()
    assert DemoConfig.help()["k"] == "fraction of tokens kept"


def test_errors_name_the_parameter(tmp_path):
    with pytest.raises(ConfigError, match=r"DemoConfig.k = 2: must be in \(0, 1\]"):
        DemoConfig(k=2)
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['kk'\]"):
        DemoConfig.from_dict({"kk": 1})
    (tmp_path / "bad.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        DemoConfig.from_yaml(tmp_path / "bad.yaml")

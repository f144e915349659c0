"""RunConfig: validation, identity and run ids (config.py)."""


import pytest

from mara_bench.config import RunConfig
from mara_bench.errors import UserError


def test_run_config_identity_and_id():
    a = RunConfig(mara="on").validate()
    assert a.mara == "paper"
    b = RunConfig(mara="paper", output_dir="/elsewhere", data_dir="/data").validate()
    assert a.run_id() == b.run_id()  # locations do not change identity
    c = RunConfig(mara="paper", seed=1).validate()
    assert c.run_id() != a.run_id() and c.run_id().startswith("mace-paper-default-s1-quick-seed1-")
    off1 = RunConfig(mara="off", mara_grid="8x16").validate()
    assert off1.run_id() == RunConfig(mara="off").validate().run_id()  # MARA options irrelevant when off
    with pytest.raises(UserError, match="unknown config key 'sed'.*did you mean 'seed'"):
        RunConfig.from_dict({"sed": 1})
    with pytest.raises(UserError, match="'seed' must be an integer"):
        RunConfig.from_dict({"seed": "1"})
    with pytest.raises(UserError, match="mara_hidden"):
        RunConfig.from_dict({"mara_hidden": 30, "mara_heads": 4})

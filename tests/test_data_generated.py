"""Real samples and a freshly generated dataset flow through the same reader with identical dtypes and shapes,
and `--exp check_data` passes on both (via main.py, as a user runs it)."""
import pytest

import main
from tests.conftest import SHARED
from tools.data.clevrer import ClevrerDataset

REAL = SHARED / "data" / "real_samples"
pytestmark = pytest.mark.usefixtures("real_samples")  # fails loudly when ../shared is missing


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("generated")
    code = main.main(["--exp", "generate", "--data_path", str(root), "--pretrain_config",
                      "configs/data/generate_tiny.yaml", "--config_mod", "counts.train=1", "counts.val=1",
                      "counts.unlabeled=1", "counts.hidden=1", "workers=1"])
    assert code == 0
    return root


@pytest.mark.parametrize("split", ["train", "unlabeled"])
def test_same_reader_same_dtypes_and_shapes(generated, split):
    real, fake = ClevrerDataset(REAL, split)[0], ClevrerDataset(generated, split)[0]
    for key in ("frames", "mask", "has_mask"):
        assert real[key].dtype == fake[key].dtype, key
        assert real[key].shape == fake[key].shape, key
    assert real["frames"].shape == (22, 3, 160, 240)
    assert bool(real["has_mask"]) == bool(fake["has_mask"]) == (split == "train")


def test_check_data_passes_on_real_and_generated(generated, capsys):
    for root in (REAL, generated):
        assert main.main(["--exp", "check_data", "--data", "CLEVRER", "--data_path", str(root)]) == 0
    assert "OK" in capsys.readouterr().out

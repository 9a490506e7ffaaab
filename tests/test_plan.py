"""`unet-lab plan`: parameters, FLOPs and memory of a model on the data it would train on."""

from pathlib import Path

import pytest
from conftest import TINY_DATA, compose_config

from unet_lab.commands.plan import main
from unet_lab.training.plan import make_plan


def _plan(tmp_path: Path, *overrides: str):
    return make_plan(compose_config(tmp_path, [*TINY_DATA, *overrides]))


def test_counts_follow_the_model_and_the_input_size(tmp_path: Path) -> None:
    small = _plan(tmp_path, "model.depth=3", "model.width=8")  # 32 px images
    large = _plan(tmp_path, "model.depth=3", "model.width=8", "data.image_size=64")
    conv_weight = 3 * 3 * 3 * 8  # the first convolution alone
    assert small.parameters == large.parameters > conv_weight
    assert small.input_size == (32, 32) and small.output_size == (32, 32)
    assert large.gflops_per_image == pytest.approx(4 * small.gflops_per_image, rel=1e-6)
    ratio = (
        large.activation_bytes_per_image["float32"] / small.activation_bytes_per_image["float32"]
    )
    assert ratio == pytest.approx(4, rel=0.05)
    assert not small.warnings


def test_parameters_and_flops_by_hand(tmp_path: Path) -> None:
    """depth 1, width 1, 3 -> 4 channels on 32 px: few enough layers to count. FLOPs count
    2 per multiply-add of the convolutions (norms and activations are not counted)."""
    plan = _plan(tmp_path, "model.depth=1", "model.width=1")
    # stem 27+2+9+2, down 18+4+36+4, up-conv 8+1, up block 18+2+9+2, head 4+4
    assert plan.parameters == 40 + 62 + 9 + 31 + 8
    full, half = 32 * 32, 16 * 16
    macs = 27 * full + 9 * full + 18 * half + 36 * half + 8 * half + 18 * full + 9 * full
    macs += 4 * full  # the 1x1 head
    assert plan.gflops_per_image * 1e9 == pytest.approx(2 * macs)


def test_warns_when_the_model_is_too_deep_for_the_patches(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "model.depth=5", "model.width=4")  # 32 px -> 1 px at the bottom
    assert plan.warnings and "use depth <= 3" in plan.warnings[0]


def test_bf16_activations_are_measured_too(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "model.depth=2", "model.width=8")
    assert set(plan.activation_bytes_per_image) == {"float32", "bf16-mixed"}
    assert all(v > 0 for v in plan.activation_bytes_per_image.values())


@pytest.mark.parametrize("model", ["unet", "unet_plusplus", "attention_unet", "unet_paper"])
def test_the_command_prints_a_table_for_any_model(model: str, capsys) -> None:
    main([f"model={model}", "model.depth=2", "model.width=4", *TINY_DATA])
    out = capsys.readouterr().out
    for row in ("parameters", "forward per image", "activations, batch 8"):
        assert row in out


def test_training_compute_counts_every_sample_seen_and_every_validation(tmp_path: Path) -> None:
    """TINY_DATA: 32 training and 8 validation images of 32 px, as large as the plan's input."""
    plan = _plan(tmp_path, "model.depth=2", "model.width=8", "trainer.max_epochs=5")
    compute = plan.compute
    assert compute is not None
    assert (compute.epochs, compute.train_samples, compute.validations) == (5, 32, 5)
    gflops = plan.gflops_per_image
    assert compute.validation_gflops == pytest.approx(8 * gflops)
    assert compute.tflops * 1e3 == pytest.approx(5 * 32 * 3 * gflops + 5 * 8 * gflops)
    every_other = _plan(
        tmp_path, "model.depth=2", "trainer.max_epochs=5", "trainer.check_val_every_n_epoch=2"
    ).compute
    assert every_other is not None and every_other.validations == 2
    assert f"training compute      {compute.tflops:.1f} TFLOP" in plan.table()

"""The README's main-job command and its two fresh-machine commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import SimpleITK as sitk

REPOSITORY = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (REPOSITORY / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```\n(python3 -m venv .*)\n```", text)


def test_readme_has_two_fresh_machine_commands():
    commands = readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("mricore_nnunet demo")
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci_script = (REPOSITORY / ".ci" / "run").read_text(encoding="utf-8")
    assert readme_commands()[1] in ci_script


def test_demo_trains_predicts_and_scores(tmp_path, bundled_dataset):
    """A shortened main job: every stage runs and the predictions keep the scans' geometry."""
    work_dir = tmp_path / "demo"
    completed = subprocess.run(
        [str(Path(sys.executable).with_name("mricore_nnunet")), "demo", "--work-dir", str(work_dir), "--epochs", "1",
         "--iterations-per-epoch", "3", "--batch-size", "4", "--input-size", "64"],
        capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=1200,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    for stage in ("[1/4]", "[2/4]", "[3/4]", "[4/4]"):
        assert stage in completed.stdout
    dice_lines = re.findall(r"label (\d) \((\w+)\): (\d\.\d+)", completed.stdout)
    assert [(label, name) for label, name, _ in dice_lines] == [("1", "Anterior"), ("2", "Posterior")]

    for image_file in sorted((bundled_dataset / "imagesTs").iterdir()):
        case = image_file.name[: -len("_0000.nii.gz")]
        prediction = sitk.ReadImage(str(work_dir / "predictions" / f"{case}.nii.gz"))
        image = sitk.ReadImage(str(image_file))
        assert prediction.GetSize() == image.GetSize()
        assert prediction.GetSpacing() == image.GetSpacing()

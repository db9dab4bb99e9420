"""``stem-refine refine`` and ``stem-refine demo``: results, resume, one-line errors with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase.cluster import Icosahedron
from ase.io import read

from refine.cli.main import main
from surrogate.imaging.grid import ProbeGrid

PIXEL = 0.1


@pytest.fixture(scope="module")
def image_file(small_model, tmp_path_factory):
    truth = Icosahedron("Pt", 2)
    truth.positions += 4.5 - truth.positions.mean(axis=0)
    grid = ProbeGrid(origin=(0.0, 0.0), shape=(90, 90), pixel_size=PIXEL)
    rng = np.random.default_rng(11)
    data = 20.0 * small_model.simulate(truth, grid) + 0.05 + rng.normal(0.0, 5e-4, grid.shape)
    path = tmp_path_factory.mktemp("image") / "image.npy"
    np.save(path, data)
    return path


def _args(image, model, out, *extra):
    return ["refine", str(image), "--model", str(model), "--composition", "Pt13", "--out", str(out),
            "--pixel-size", str(PIXEL), "--population", "5", "--seed", "3", "--no-progress", "--search", "plain",
            *extra]


def test_refine_then_resume_through_the_cli(image_file, model_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(image_file, model_file, out, "--generations", "1")) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "best.xyz" in printed and "χ²" in printed
    first = json.loads((out / "summary.json").read_text())
    assert first["generations"] == 1 and not first["resumed"]
    best1 = read(out / "best.xyz")
    assert best1.get_chemical_formula() == "Pt13"

    assert main(_args(image_file, model_file, out, "--generations", "3", "--resume", "--json")) == 0
    second = json.loads(capsys.readouterr().out)
    assert second == json.loads((out / "summary.json").read_text())
    assert second["resumed"] and second["generations"] == 3
    assert second["alpha"] == pytest.approx(first["alpha"])
    assert second["best_cost"] <= first["best_cost"] * (1 + 1e-9)
    rows = (out / "logbook.csv").read_text().strip().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == [0, 1, 2, 3]


def test_the_run_log_in_the_output_folder_has_alpha_and_grows_over_a_resume(image_file, model_file, tmp_path,
                                                                           capsys):
    out = tmp_path / "run"
    assert main(_args(image_file, model_file, out, "--generations", "1")) == 0
    err = capsys.readouterr().err
    log1 = (out / "refine.log").read_text()
    # INFO in the file (α and its rule), not on the console (default level WARNING)
    assert "alpha = " in log1 and "IQR" in log1 and "refinement finished" in log1
    assert "alpha = " not in err
    assert main(_args(image_file, model_file, out, "--generations", "2", "--resume")) == 0
    log2 = (out / "refine.log").read_text()
    assert log2.startswith(log1) and "resumed from" in log2[len(log1):]
    assert "refine.log" in json.loads((out / "summary.json").read_text())["files"]


def test_resumed_cli_run_equals_an_uninterrupted_one(image_file, model_file, tmp_path, capsys):
    assert main(_args(image_file, model_file, tmp_path / "full", "--generations", "2")) == 0
    assert main(_args(image_file, model_file, tmp_path / "split", "--generations", "1")) == 0
    assert main(_args(image_file, model_file, tmp_path / "split", "--generations", "2", "--resume")) == 0
    capsys.readouterr()
    a, b = read(tmp_path / "full" / "best.xyz"), read(tmp_path / "split" / "best.xyz")
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-7)


def _bad(tmp_path, kind):
    p = tmp_path / f"{kind}.npy"
    data = np.full((40, 40), 0.2)
    if kind == "nan":
        data[5, 5] = np.nan
    np.save(p, data)
    return p


def test_a_killed_default_search_resumes_to_the_uninterrupted_answer(image_file, model_file, tmp_path):
    # the CLI's default search (offspring relaxed on image forces, annealings on a process pool, polish sweeps,
    # a finishing stage) killed with SIGKILL — the whole process group, pool workers included — and resumed ends
    # with the uninterrupted run's best structure and logbook, bit for bit (without a time limit: wall time is not
    # repeatable). Until refine.cost.fitness._gauss_newton was taken out of numba's cache, the first polish after a
    # resume differed in the last bits (3e-7 Å after 10 generations): see the comment on that kernel
    import csv
    import os
    import signal
    import subprocess
    import sys
    import time

    from refine.search import CHECKPOINT_NAME, load_checkpoint

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}

    def command(out, *extra):
        args = [a for a in _args(image_file, model_file, out, "--generations", "10", "--anneal-steps", "50",
                                 "--relax-steps", "5", "--workers", "2", *extra) if a != "--search"]
        args.remove("plain")
        return [sys.executable, "-m", "refine.cli.main", *args]

    full_dir, killed_dir = tmp_path / "full", tmp_path / "killed"
    full = subprocess.Popen(command(full_dir), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    victim = subprocess.Popen(command(killed_dir), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    ckpt = killed_dir / CHECKPOINT_NAME
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and victim.poll() is None:
        if ckpt.exists() and load_checkpoint(ckpt)["generation"] >= 4:  # after an annealing, before the polish
            break
        time.sleep(0.01)
    os.killpg(victim.pid, signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL, victim.stderr.read().decode()[-2000:]
    stopped_at = load_checkpoint(ckpt)["generation"]
    assert 4 <= stopped_at < 10 and not (killed_dir / "summary.json").exists()
    resumed = subprocess.run(command(killed_dir, "--resume"), env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, timeout=600)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    _, err = full.communicate(timeout=600)
    assert full.returncode == 0, err.decode()[-2000:]
    a, b = read(full_dir / "best.xyz"), read(killed_dir / "best.xyz")
    np.testing.assert_array_equal(a.positions, b.positions)

    def rows(path):
        with open(path, newline="") as fh:
            return [{k: float(v) for k, v in r.items() if k != "elapsed_s"} for r in csv.DictReader(fh)]

    full_rows, resumed_rows = rows(full_dir / "logbook.csv"), rows(killed_dir / "logbook.csv")
    assert len(full_rows) == len(resumed_rows) == 11
    assert full_rows == resumed_rows
    summary = json.loads((killed_dir / "summary.json").read_text())
    assert summary["resumed"] and summary["settings"]["anneal_every"] == 3 and summary["settings"]["polish_every"]


@pytest.mark.parametrize("case, fragment", [
    ("nan", "NaN"),
    ("constant", "constant"),
    ("no_pixel_size", "--pixel-size"),
    ("Au13", "not among the model's elements"),
    ("Pt0", "must be positive"),
    ("Xx5", "unknown element"),
    ("missing_image", "does not exist"),
    ("missing_model", "does not exist"),
    ("bad_mask", "mask"),
    ("bad_start", "start must be"),
    ("empty_npy", "empty_npy.npy: cannot read"),
    ("empty_npz", "holds no array"),
    ("corrupt_npz", "corrupt_npz.npz: cannot read"),
    ("corrupt_tif", "corrupt_tif.tif"),
    ("npz_pixel_array", "'pixel_size' must be one number"),
    ("corrupt_mask", "corrupt_mask.npy: "),
    ("missing_sigma_map", "noise σ map file"),
    ("sigma_map_shape", "does not match the image file's"),
])
def test_bad_input_is_a_one_line_error_with_exit_2_and_no_outputs(image_file, model_file, tmp_path, capsys,
                                                                   case, fragment):
    out = tmp_path / "out"
    args = _args(image_file, model_file, out, "--generations", "1")
    if case in ("nan", "constant"):
        args[1] = str(_bad(tmp_path, case))
    elif case == "no_pixel_size":
        i = args.index("--pixel-size")
        del args[i:i + 2]
    elif case in ("Au13", "Pt0", "Xx5"):
        args[args.index("Pt13")] = case
    elif case == "missing_image":
        args[1] = str(tmp_path / "nope.tif")
    elif case == "missing_model":
        args[args.index(str(model_file))] = str(tmp_path / "nope.npz")
    elif case == "bad_mask":
        bad_mask = tmp_path / "mask.npy"
        np.save(bad_mask, np.ones((3, 3)))
        args += ["--mask", str(bad_mask)]
    elif case == "bad_start":
        args += ["--start", str(tmp_path / "nope.xyz")]
    elif case in ("empty_npy", "corrupt_npz", "corrupt_tif", "corrupt_mask"):
        path = tmp_path / (case + {"empty_npy": ".npy", "corrupt_npz": ".npz", "corrupt_tif": ".tif",
                                   "corrupt_mask": ".npy"}[case])
        # empty, or a valid file's first half (a truncated copy)
        if case == "empty_npy":
            path.write_bytes(b"")
        else:
            src = tmp_path / ("whole" + path.suffix)
            if path.suffix == ".tif":
                import tifffile

                tifffile.imwrite(src, np.ones((40, 40), dtype=np.float32))
            elif path.suffix == ".npz":
                np.savez(src, image=np.ones((40, 40)))
            else:
                np.save(src, np.ones((90, 90)))
            whole = src.read_bytes()
            path.write_bytes(whole[: len(whole) // 2])
        if case == "corrupt_mask":
            args += ["--mask", str(path)]
        else:
            args[1] = str(path)
    elif case == "empty_npz":
        args[1] = str(tmp_path / "empty_npz.npz")
        np.savez(args[1])
    elif case == "npz_pixel_array":
        args[1] = str(tmp_path / "pixel.npz")
        np.savez(args[1], image=np.load(image_file), pixel_size=np.array([0.1, 0.1]))
        i = args.index("--pixel-size")
        del args[i:i + 2]
    elif case == "missing_sigma_map":
        args += ["--noise", str(tmp_path / "sigma.npy")]
    elif case == "sigma_map_shape":
        np.save(tmp_path / "sigma.npy", np.full((30, 30), 0.01))
        args += ["--noise", str(tmp_path / "sigma.npy")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    err = [e for e in err if not e.startswith(("WARNING", "INFO"))]
    assert len(err) == 1, err
    assert err[0].startswith("stem-refine refine: error:") and fragment in err[0]
    assert not out.exists()


def test_existing_run_needs_resume(image_file, model_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_args(image_file, model_file, out, "--generations", "0")) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(_args(image_file, model_file, out, "--generations", "1")) == 2
    assert "--resume" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


@pytest.mark.parametrize("change, fragment", [
    (["--noise", "0.01"], "noise model"),
    (["--alpha", "1e-3"], "alpha"),
    (["--calculator", "ase-emt"], "energy calculator"),
    (["--model", "OTHER"], "model"),
])
def test_resume_with_other_cost_inputs_is_refused_and_changes_nothing(image_file, model_file, small_model,
                                                                      tmp_path, capsys, change, fragment):
    out = tmp_path / "out"
    assert main(_args(image_file, model_file, out, "--generations", "1")) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    args = _args(image_file, model_file, out, "--generations", "2", "--resume")
    if change[0] == "--model":
        import copy

        from surrogate.imaging.model import save_model

        other = copy.deepcopy(small_model)
        other.coef_ = other.coef_ * 1.01
        args[args.index(str(model_file))] = str(save_model(other, tmp_path / "other.npz"))
    else:
        args += change
    capsys.readouterr()
    assert main(args) == 2
    err = [e for e in capsys.readouterr().err.strip().splitlines() if not e.startswith(("WARNING", "INFO"))]
    assert len(err) == 1 and "cannot resume" in err[0] and fragment in err[0], err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_resume_without_a_checkpoint_says_so_and_starts(image_file, model_file, tmp_path, caplog):
    out = tmp_path / "out"
    assert main(_args(image_file, model_file, out, "--generations", "0", "--resume")) == 0
    assert "no checkpoint" in caplog.text
    assert (out / "checkpoint.npz").is_file()


def test_a_sigma_map_file_is_the_noise_model(image_file, model_file, tmp_path, capsys):
    # a constant σ map is the uniform noise model with that σ: the same χ²
    np.save(tmp_path / "sigma.npy", np.full((90, 90), 0.01))
    assert main(_args(image_file, model_file, tmp_path / "map", "--generations", "0", "--json",
                      "--noise", str(tmp_path / "sigma.npy"))) == 0
    by_map = json.loads(capsys.readouterr().out)
    assert main(_args(image_file, model_file, tmp_path / "uniform", "--generations", "0", "--json",
                      "--noise", "0.01")) == 0
    uniform = json.loads(capsys.readouterr().out)
    assert by_map["noise"]["model"] == "map" and uniform["noise"]["model"] == "uniform"
    assert by_map["chi2"] == pytest.approx(uniform["chi2"], rel=1e-12)
    # σ twice as large on half of the image: that half weighs a quarter as much
    sigma = np.full((90, 90), 0.01)
    sigma[45:] = 0.02
    np.save(tmp_path / "sigma2.npy", sigma)
    assert main(_args(image_file, model_file, tmp_path / "map2", "--generations", "0", "--json",
                      "--noise", str(tmp_path / "sigma2.npy"))) == 0
    assert json.loads(capsys.readouterr().out)["chi2"] < 0.9 * uniform["chi2"]


def test_pareto_mode_with_the_default_search(image_file, model_file, tmp_path, capsys):
    out = tmp_path / "out"
    args = [a for a in _args(image_file, model_file, out, "--generations", "1", "--json", "--pareto")
            if a != "--search"]
    args.remove("plain")
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["multi_objective"] and summary["settings"]["finish_fraction"] == 0
    assert summary["settings"]["anneal_every"] == 3  # the rest of the anneal recipe is kept
    assert len(read(out / "pareto.xyz", index=":")) == summary["pareto_front_size"] >= 1
    # an explicit finishing stage cannot be had with NSGA-II
    args[args.index(str(out))] = str(tmp_path / "o2")
    assert main(args + ["--finish-fraction", "0.2"]) == 2
    assert "single-objective" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_the_domain_warning_survives_a_resume(image_file, model_file, small_model, tmp_path, capsys, caplog):
    import copy

    from surrogate.imaging.model import save_model

    # a model whose training range ends far below the particle's convolution image
    narrow = copy.deepcopy(small_model)
    lo, hi = narrow.input_range_
    narrow.input_range_ = (lo, lo + 1e-3 * (hi - lo))
    path = save_model(narrow, tmp_path / "narrow.npz")
    out = tmp_path / "out"
    assert main(_args(image_file, path, out, "--generations", "1", "--json")) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["domain_warning"] and first["out_of_domain_evaluations"] >= first["evaluations"]
    assert "training range" in caplog.text
    caplog.clear()
    # as after a SIGKILL: the checkpoint is there, the summary is not; the count is in the checkpoint
    (out / "summary.json").unlink()
    assert main(_args(image_file, path, out, "--generations", "2", "--resume", "--json")) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["domain_warning"] and "domain_warning_message" in second
    # the first part's count carried over, plus at least every GA evaluation of the second part
    new = second["evaluations"] - first["evaluations"]
    assert new > 0 and second["out_of_domain_evaluations"] >= first["out_of_domain_evaluations"] + new
    assert "training range" in caplog.text


def test_missing_default_model_is_a_one_line_error(image_file, tmp_path, capsys, monkeypatch):
    import surrogate

    monkeypatch.setattr(surrogate, "default_model_path", lambda: tmp_path / "absent" / "default_model.npz")
    args = ["refine", str(image_file), "--composition", "Pt13", "--out", str(tmp_path / "o"),
            "--pixel-size", "0.1", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "default model" in err[0] and "--model" in err[0]


def test_demo_runs_on_the_shipped_image(model_file, tmp_path, capsys):
    from refine.cli.demo import demo_files

    try:
        image, meta, truth = demo_files()
    except ValueError as exc:
        pytest.skip(str(exc))
    assert Path(image).stat().st_size < 1_000_000  # shipped files stay small
    assert read(str(truth)).get_chemical_formula() == meta["composition"]
    from surrogate import default_model_path

    out = tmp_path / "demo"
    # as on a fresh install: the shipped model when present (else the small test model)
    model = [] if Path(default_model_path()).is_file() else ["--model", str(model_file)]
    assert main(["demo", "--out", str(out), "--generations", "1", "--population", "4", "--no-progress", *model]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "within 0.5 Å" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["composition"] == meta["composition"] and summary["noise"]["dose"] == meta["dose"]


def test_the_demo_runs_again_in_a_new_folder_resumes_the_latest_and_force_starts_afresh(model_file, tmp_path,
                                                                                       capsys, monkeypatch):
    from refine.cli.demo import demo_files
    from refine.search import CHECKPOINT_NAME

    try:
        demo_files()
    except ValueError as exc:
        pytest.skip(str(exc))
    monkeypatch.chdir(tmp_path)
    # the small test model: this test is about folders, and its runs take seconds
    tiny = ["--generations", "1", "--population", "4", "--search", "plain", "--no-progress", "--json",
            "--model", str(model_file)]

    def demo(*extra):
        rc = main(["demo", *tiny, *extra])
        return rc, capsys.readouterr()

    rc, first = demo()
    assert rc == 0 and (tmp_path / "stem-refine-demo" / CHECKPOINT_NAME).is_file()
    rc, second = demo()
    assert rc == 0, second.err
    assert (tmp_path / "stem-refine-demo-2" / "summary.json").is_file()
    assert "stem-refine-demo-2" in second.err
    assert not json.loads(first.out)["resumed"] and not json.loads(second.out)["resumed"]
    assert "truth_comparison" in json.loads(second.out)
    # --resume continues the latest folder
    rc, resumed = demo("--resume")
    doc = json.loads(resumed.out)
    assert rc == 0 and doc["resumed"] and "stem-refine-demo-2" in resumed.err
    assert doc.pop("truth_comparison")["n_matched"] == 130
    assert doc == json.loads((tmp_path / "stem-refine-demo-2" / "summary.json").read_text())
    assert not (tmp_path / "stem-refine-demo-3").exists()
    # an explicit folder with a run in it needs --resume or --force
    rc, refused = demo("-o", "stem-refine-demo")
    assert rc == 2 and "--resume" in refused.err
    rc, forced = demo("-o", "stem-refine-demo", "--force")
    assert rc == 0 and not json.loads(forced.out)["resumed"]
    assert json.loads((tmp_path / "stem-refine-demo" / "summary.json").read_text())["generations"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stem-refine-demo", "stem-refine-demo-2"]
    # --resume and --force exclude each other
    with pytest.raises(SystemExit) as exc:
        main(["demo", *tiny, "--resume", "--force"])
    assert exc.value.code == 2


@pytest.mark.parametrize("extra, fragment", [
    (["--image-forces", "--relax-steps", "0"], "relax steps"),
    (["--anneal-every", "-1"], "anneal_every"),
    (["--anneal-every", "1", "--anneal-steps", "-5"], "anneal_steps"),
    (["--anneal-every", "1", "--anneal-temperature", "0"], "anneal_temperature"),
    (["--anneal-every", "1", "--anneal-image-weight", "2"], "anneal_image_weight"),
    (["--workers", "0"], "workers"),
    (["--relax-steps", "-5"], "relax_steps"),
    (["--checkpoint-every", "0"], "checkpoint_every"),
    (["--finish-fraction", "1.5"], "finish_fraction"),
    (["--finish-fraction", "0.2", "--finish-alpha", "auto"], "--finish-alpha"),
    (["--finish-fraction", "0.2", "--finish-alpha", "-1"], "finish_alpha"),
])
def test_bad_search_options_are_one_line_errors(image_file, model_file, tmp_path, capsys, extra, fragment):
    out = tmp_path / "out"
    assert main(_args(image_file, model_file, out, "--generations", "1", *extra)) == 2
    err = [e for e in capsys.readouterr().err.strip().splitlines() if not e.startswith(("WARNING", "INFO"))]
    assert len(err) == 1 and fragment in err[0], err
    assert not out.exists()


def test_image_forces_and_annealing_through_the_cli(image_file, model_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_args(image_file, model_file, out, "--generations", "2", "--relax-steps", "3", "--image-forces",
                      "--anneal-every", "1", "--anneal-steps", "50", "--json")) == 0
    summary = json.loads(capsys.readouterr().out)
    # μ starts + 2 generations of λ = μ offspring + one annealing each
    assert summary["evaluations"] == 5 + 2 * (5 + 1)
    assert summary["settings"]["relax_image"] is True and summary["settings"]["anneal_every"] == 1


def test_the_default_search_is_the_anneal_recipe(image_file, model_file, tmp_path, capsys):
    out = tmp_path / "out"
    args = [a for a in _args(image_file, model_file, out, "--generations", "1", "--json") if a not in ("--search",)]
    args.remove("plain")
    assert main(args) == 0
    settings = json.loads(capsys.readouterr().out)["settings"]
    # the anneal recipe (refine.search.recipes), by the flat names summary.json keeps
    anneal = {"relax_image": True, "beam_parallel_cuts": 0.8, "anneal_every": 3, "anneal_count": 2,
              "anneal_steps": 20000, "polish_every": 5, "polish_atoms": 60, "polish_patches": 4,
              "polish_image_moves": 16, "polish_dark_sites": 6, "polish_adatom_flips": True, "polish_annealed": True,
              "polish_shifts": 2,
              "mutation_weights": {"depth_flip": 1.0, "depth_move": 4.0},
              "finish_fraction": 0.15, "finish_alpha": "thermal", "finish_weights": {"image_guided": 4.0}}
    for key, value in anneal.items():
        assert settings[key] == value, key
    assert settings["relax_steps"] == 20


def test_thermal_alpha_and_a_finishing_stage_through_the_cli(image_file, model_file, tmp_path, capsys):
    from ase.units import kB

    out = tmp_path / "out"
    assert main(_args(image_file, model_file, out, "--generations", "4", "--alpha", "1e-3",
                      "--finish-fraction", "0.5", "--json")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["settings"]["finish_fraction"] == 0.5 and summary["settings"]["finish_alpha"] == "thermal"
    # the answer is selected (and reported) at the thermal α
    assert summary["alpha"] == pytest.approx(0.5 * kB * 300.0) and summary["search_alpha"] == 1e-3
    log = (out / "logbook.csv").read_text().splitlines()
    assert len(log) == 1 + 5
    out2 = tmp_path / "out2"
    assert main(_args(image_file, model_file, out2, "--generations", "1", "--alpha", "thermal", "--json")) == 0
    assert json.loads(capsys.readouterr().out)["alpha"] == pytest.approx(0.5 * kB * 300.0)

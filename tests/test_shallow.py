"""The shallow network: its data against the closed form, the model, training through the
package's loop, the test-loss curve, and the CLI (good and bad input)."""

from __future__ import annotations

import json

import pytest
import torch

from metanb.cli import main
from metanb.errors import MetanbError
from metanb.shallow import (
    METHODS,
    ProbedBatch,
    ShallowNet,
    ShallowSetup,
    curve_steps,
    heldout_loss,
    make_problem,
    run_shallow,
    shallow_grid,
)

QUICK = {"d": 4, "tasks": 2, "samples": 64, "finetune_samples": 16, "test_samples": 50,
         "retrain_steps": 30, "finetune_steps": 20, "curve_points": 5}


def test_labels_follow_the_generative_model():
    setup = ShallowSetup(d=3, tasks=2, k=1, samples=5, finetune_samples=4, test_samples=6,
                         noise=0.0)
    p = make_problem(setup)
    assert p.a_star.shape == (3, 3) and p.u.shape == (3, 3, 1) and p.x.shape == (2, 5, 3)
    for t in range(2):  # y = cᵀ sigmoid((A* + U_t U_tᵀ) x), row by row
        m = p.a_star + p.u[t] @ p.u[t].T
        for i in range(5):
            assert p.y[t, i].item() == pytest.approx(
                float(p.c @ torch.sigmoid(m @ p.x[t, i])), rel=1e-5)
    assert torch.allclose(p.y_test, p.clean(2, p.x_test))  # the fresh task is task T
    assert torch.allclose(p.y_finetune, p.clean(2, p.x_finetune))  # noise 0


def test_noise_has_the_asked_std_and_the_seed_fixes_the_draw():
    clean = make_problem(ShallowSetup(d=3, tasks=1, samples=20000, noise=0.0, seed=5))
    noisy = make_problem(ShallowSetup(d=3, tasks=1, samples=20000, noise=0.1, seed=5))
    assert torch.equal(clean.x, noisy.x)
    assert float((noisy.y - clean.y).std()) == pytest.approx(0.1, rel=0.03)
    other = make_problem(ShallowSetup(d=3, tasks=1, samples=20000, noise=0.1, seed=6))
    assert not torch.equal(other.x, noisy.x)


def test_finetuning_rank_is_3k_at_two_tasks():
    assert ShallowSetup(tasks=2, k=2).finetune_rank == 6
    assert ShallowSetup(tasks=3, k=2).finetune_rank == 2
    with pytest.raises(MetanbError, match="the fine-tuning rank 6 exceeds d = 5"):
        ShallowSetup(d=5, tasks=2, k=2)


def test_net_is_two_bias_free_linears_and_scores_the_true_model_at_zero():
    net = ShallowNet(3)
    assert net.first.bias is None and net.head.bias is None
    p = make_problem(ShallowSetup(d=3, tasks=1, k=1, test_samples=10))
    u = p.u[1]
    with torch.no_grad():
        net.first.weight.copy_(p.a_star + u @ u.T)
        net.head.weight.copy_(p.c[None])
    assert heldout_loss(net, p) == pytest.approx(0.0, abs=1e-10)
    out = net(p.x_test, labels=p.y_test)
    assert out.predictions.shape == (10,) and out.loss.item() == pytest.approx(0.0, abs=1e-10)


def test_probed_batch_calls_the_probe_when_the_loop_reaches_a_step():
    calls: list[int] = []
    data = ProbedBatch({"x": torch.zeros(1)}, steps=6, at={0, 4}, probe=calls.append)
    assert len(data) == 6
    assert [data[i]["x"].item() for i in range(6)] == [0.0] * 6 and calls == [0, 4]


def test_curve_steps_are_evenly_spaced_from_zero():
    assert curve_steps(1000, 4) == [0, 250, 500, 750]
    assert curve_steps(3, 50) == [0, 1, 2]


@pytest.mark.parametrize("method", ["sr", "lora-ml"])
def test_a_run_trains_through_the_loop_and_lowers_the_new_task_loss(method):
    res = run_shallow(method, ShallowSetup(**{**QUICK, "finetune_steps": 60, "lr": 3e-2}))
    assert res["method"] == method and res["finetune_rank"] == 3  # T = 2: 3k
    assert res["curve_iterations"][0] == 0 and res["curve_iterations"][-1] == 60
    assert len(res["curve"]) == len(res["curve_iterations"])
    # before any update the adapted model is (nearly: U starts small) the base
    assert res["curve"][0] == pytest.approx(res["pretrained_test_loss"], rel=0.05)
    assert res["finetune_test_loss"] < res["pretrained_test_loss"]
    again = run_shallow(method, ShallowSetup(**{**QUICK, "finetune_steps": 60, "lr": 3e-2}))
    assert again["curve"] == res["curve"]  # seeded end to end


def test_grid_in_two_processes_gives_the_same_records_in_the_same_order():
    small = {k: v for k, v in QUICK.items() if k not in ("d", "tasks")}
    one = shallow_grid(ds=(3, 4), task_counts=(2,), trials=1, **small)
    two = shallow_grid(ds=(3, 4), task_counts=(2,), trials=1, workers=2, **small)
    drop = ("seconds", "cpu_seconds")
    assert [(r["method"], r["d"]) for r in one] == [(m, d) for d in (3, 4) for m in METHODS]
    assert [{k: v for k, v in r.items() if k not in drop} for r in two] == [
        {k: v for k, v in r.items() if k not in drop} for r in one]
    with pytest.raises(MetanbError, match="workers must be >= 1"):
        shallow_grid(ds=(3,), task_counts=(2,), trials=1, workers=0, **small)


def test_cli_json_prints_the_record(capsys):
    code = main(["shallow", "--method", "lora-ml", "--d", "4", "--tasks", "3", "--samples",
                 "32", "--finetune-samples", "8", "--retrain-steps", "5", "--finetune-steps",
                 "5", "--seed", "2", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert {k: out[k] for k in ("method", "d", "k", "tasks", "seed")} == {
        "method": "lora-ml", "d": 4, "k": 1, "tasks": 3, "seed": 2}
    assert out["curve_length"] == len(out["curve"]) == len(out["curve_iterations"])
    assert out["finetune_test_loss"] == out["curve"][-1] > 0


@pytest.mark.parametrize(("argv", "message"), [
    (["--method", "maml", "--d", "4", "--tasks", "2"], "invalid choice: 'maml'"),
    (["--method", "sr", "--d", "0", "--tasks", "2"], "expected a positive integer, got '0'"),
    (["--method", "sr", "--d", "4", "--tasks", "x"], "expected a positive integer, got 'x'"),
    (["--method", "sr", "--d", "4", "--tasks", "2", "--finetune-steps", "-3"],
     "expected a positive integer, got '-3'"),
    (["--method", "sr", "--d", "2", "--tasks", "2", "--k", "1"],
     "the fine-tuning rank 3 exceeds d = 2; lower k"),
    (["--method", "sr", "--d", "4", "--tasks", "2", "--lr", "nan"],
     "lr must be a finite number > 0, got nan"),
    (["--method", "sr", "--d", "4", "--tasks", "2", "--noise", "-1"],
     "noise must be a finite number >= 0, got -1.0"),
    (["--d", "4", "--tasks", "2"], "the following arguments are required: --method"),
])
def test_cli_bad_arguments_are_one_line_and_exit_2(argv, message, capsys):
    try:  # argparse mistakes exit inside main; MetanbError comes back as status 2
        code = main(["shallow", *argv])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err

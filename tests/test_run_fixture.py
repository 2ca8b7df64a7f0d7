import json

from factory.evaluate import calibrated_subnet, evaluate_arch
from factory.run import load_run


def test_tiny_run_loads_and_evaluates(tiny_run):
    run = load_run(tiny_run)
    assert run.num_classes == 10 and run.class_names[0] == "0"
    lines = (tiny_run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["phase"] for x in lines] == ["teacher", "kernel", "depth", "expand"]
    res = evaluate_arch(run, run.space.smallest())
    assert 0.0 <= res.accuracy <= 1.0 and res.loss > 0 and res.images == len(run.dataset().val)
    net = calibrated_subnet(run, run.space.smallest())
    assert not net.training and net.resolution == 20

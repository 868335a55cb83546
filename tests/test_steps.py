from serendip.steps import Steps


def test_step_is_cached_until_inputs_or_config_change(tmp_path):
    calls = []
    inp = tmp_path / "in.txt"
    inp.write_text("a")
    out = tmp_path / "out.txt"

    def work():
        calls.append(1)
        out.write_text("x")
        return {"n": len(calls)}

    steps = Steps(tmp_path, echo=lambda s: None)
    assert steps.run("s", work, config={"k": 1}, inputs=[inp], outputs=[out]) == {"n": 1}
    assert steps.run("s", work, config={"k": 1}, inputs=[inp], outputs=[out]) == {"n": 1}
    assert len(calls) == 1 and steps.cached == ["s"]
    steps.run("s", work, config={"k": 2}, inputs=[inp], outputs=[out])
    assert len(calls) == 2
    inp.write_text("changed!")
    steps.run("s", work, config={"k": 2}, inputs=[inp], outputs=[out])
    assert len(calls) == 3
    out.unlink()
    steps.run("s", work, config={"k": 2}, inputs=[inp], outputs=[out])
    assert len(calls) == 4

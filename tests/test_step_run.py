"""The core's checkpointed step run, with a channel's steps written here (a test double of the channel,
not of the core): the lease, the checkpoints, the failure record; and the contract that channel code
leaves the ledger and the retry policy to the core. A real SQLite ledger in tmp_path."""
from __future__ import annotations

import ast
import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from distributor.channel import StepContext, StepFailure
from distributor.delivery.retry import RetryPolicy
from distributor.delivery.step_run import lease_name, recorded_steps, run_steps
from distributor.errors import ChannelStoppedError, PermanentDeliveryError, TransientDeliveryError
from distributor.ledger.store import Ledger

from .conftest import ROOT

KEY = "/news/issue-1/"
POLICY = RetryPolicy(attempts=3, base_delay_seconds=0.001, max_delay_seconds=0.01, deadline_seconds=5.0)
CORE_ONLY = ("distributor.ledger", "distributor.delivery", "distributor.feedback", "sqlite3")


@dataclass(frozen=True)
class Done:
    detail: str


class FaxSteps:
    """Two steps, "dial" then "send"; `fail_at` makes that step's call fail permanently."""

    def __init__(self, fail_at: str | None = None, calls: list[str] | None = None):
        self.fail_at, self.calls = fail_at, calls if calls is not None else []

    async def run(self, context: StepContext) -> Done:
        for step in ("dial", "send"):
            context.step = step
            if context.recorded(step) is None:
                context.record(step, await context.call(self._call, step))
        return Done(f"sent: {context.recorded('send')}")

    def _call(self, step: str) -> str:
        self.calls.append(step)
        if step == self.fail_at:
            raise PermanentDeliveryError(f"fax {step}: the line is dead")
        return f"{step}-ok"


@pytest.fixture
def ledger(tmp_path):
    opened = Ledger(tmp_path / "ledger.sqlite3")
    yield opened
    opened.close()


def run(ledger: Ledger, steps: FaxSteps, *, wait: float = 1.0) -> Done:
    return asyncio.run(run_steps(steps, ledger, KEY, channel="fax", label="fax", policy=POLICY, lease_seconds=30.0,
                                 lease_wait_seconds=wait))


def test_a_failed_step_is_recorded_and_the_next_run_resumes_after_the_last_step_and_forgets_it(ledger):
    with pytest.raises(PermanentDeliveryError, match="the line is dead"):
        run(ledger, FaxSteps(fail_at="send"))
    assert recorded_steps(ledger, "fax", KEY).failure == StepFailure("send", "failed", "fax send: the line is dead")
    assert ledger.checkpoint(KEY, "fax", "dial") == "dial-ok" and ledger.lease(lease_name("fax", KEY)) is None
    calls: list[str] = []
    assert run(ledger, FaxSteps(calls=calls)).detail == "sent: send-ok"
    assert calls == ["send"]
    recorded = recorded_steps(ledger, "fax", KEY)
    assert dict(recorded.steps) == {"dial": "dial-ok", "send": "send-ok"} and recorded.holder is None


def test_a_run_waits_for_another_holder_then_stops_and_records_nothing(ledger):
    ledger.take_lease(lease_name("fax", KEY), "another-host:1:ab", 30.0)
    calls: list[str] = []
    with pytest.raises(ChannelStoppedError, match=r"another run \(another-host:1:ab\) holds the lease on this "
                                                  r"issue's fax steps.*waited 0.3 s for it"):
        run(ledger, FaxSteps(calls=calls), wait=0.3)
    assert calls == [] and ledger.checkpoints(KEY, "fax") == {}
    assert recorded_steps(ledger, "fax", KEY).holder == "another-host:1:ab"


def test_a_run_that_waited_for_the_lease_says_so(ledger):
    name = lease_name("fax", KEY)
    ledger.take_lease(name, "another-host:1:ab", 30.0)

    async def release_soon() -> Done:
        async def release() -> None:
            await asyncio.sleep(0.3)
            ledger.release_lease(name, "another-host:1:ab")
        releasing = asyncio.ensure_future(release())
        done = await run_steps(FaxSteps(), ledger, KEY, channel="fax", label="fax", policy=POLICY,
                               lease_seconds=30.0, lease_wait_seconds=5.0)
        await releasing
        return done

    detail = asyncio.run(release_soon()).detail
    assert detail.startswith("sent: send-ok (waited ") and detail.endswith(
        " s for another run of this issue to finish its fax steps)")


def test_a_run_whose_lease_lapsed_records_nothing_more(tmp_path):
    now = [1_000_000.0]
    ledger = Ledger(tmp_path / "ledger.sqlite3", clock=lambda: now[0])

    class Stalled(FaxSteps):
        async def run(self, context: StepContext) -> Done:
            context.step = "dial"
            # The run stalls past its lease (30 s), and another run takes the steps over.
            now[0] += 31.0
            ledger.take_lease(lease_name("fax", KEY), "another-host:2:cd", 30.0)
            context.record("dial", "dial-ok")
            raise AssertionError("recorded without the lease")

    try:
        with pytest.raises(ChannelStoppedError, match="this run lost its lease on the issue's fax steps"):
            run(ledger, Stalled())
        assert ledger.checkpoints(KEY, "fax") == {}     # neither the step nor the failure: the new holder owns them
        assert recorded_steps(ledger, "fax", KEY).holder == "another-host:2:cd"
    finally:
        ledger.close()


def test_a_poll_asks_again_while_the_job_runs_until_its_deadline(ledger):
    answers = iter([TransientDeliveryError("still running")] * 3 + ["out"])

    def ask() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    class Polling(FaxSteps):
        async def run(self, context: StepContext) -> Done:
            return Done(await context.poll(ask, every_seconds=0.001, for_seconds=5.0))

    assert run(ledger, Polling()).detail == "out"

    class Never(FaxSteps):
        async def run(self, context: StepContext) -> Done:
            context.step = "wait"
            return Done(await context.poll(self._still, every_seconds=0.01, for_seconds=0.05))

        def _still(self) -> str:
            raise TransientDeliveryError("still running")

    with pytest.raises(TransientDeliveryError, match="still running"):
        run(ledger, Never())
    assert json.loads(ledger.checkpoint(KEY, "fax", "failure"))["kind"] == "stopped"


def channel_imports(folder: Path = ROOT / "channels") -> dict[str, set[str]]:
    """Return the modules each file under `folder` imports, by file relative to its parent."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[str(path.relative_to(folder.parent))] = names
    return found


def test_channel_code_imports_neither_the_ledger_nor_the_core_runs_nor_sqlite():
    imports = channel_imports()
    assert "channels/wechat/publisher.py" in imports and "distributor.channel" in \
        imports["channels/wechat/publisher.py"]
    offending = {path: sorted(name for name in names if name.startswith(CORE_ONLY))
                 for path, names in imports.items()}
    assert {path: names for path, names in offending.items() if names} == {}


def test_the_import_check_sees_an_import_of_the_ledger(tmp_path: Path):
    (tmp_path / "channels").mkdir()
    (tmp_path / "channels" / "bad.py").write_text(
        "from distributor.ledger.store import Ledger\nimport sqlite3\n"
        "def later():\n    from distributor.delivery import retry\n", encoding="utf-8")
    (names,) = channel_imports(tmp_path / "channels").values()
    assert sorted(name for name in names if name.startswith(CORE_ONLY)) == \
        ["distributor.delivery", "distributor.delivery.retry", "distributor.ledger.store",
         "distributor.ledger.store.Ledger", "sqlite3"]


def test_the_values_layer_imports_nothing_above_it():
    """render and audience turn files into values: they never reach the ledger, the runs, the drivers or
    the commands (ARCHITECTURE.md, "Layers")."""
    above = ("distributor.ledger", "distributor.delivery", "distributor.feedback", "distributor.web",
             "distributor.schedule", "distributor.commands", "distributor.cli", "sqlite3")
    for layer in ("render", "audience"):
        imports = channel_imports(ROOT / "distributor" / layer)
        offending = {path: sorted(name for name in names if name.startswith(above)) for path, names in imports.items()}
        assert {path: names for path, names in offending.items() if names} == {}, layer

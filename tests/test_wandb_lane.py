"""The agent's W&B lane: calls run in order on one thread; a failure is warned, not raised;
a hand-out waits for every offline run being written but the newest."""

import asyncio
import threading
from concurrent.futures import Future

from nbsweep.sweeping.wandb.lane import WandbLane


def test_calls_run_in_order_on_one_thread_and_a_failure_is_warned():
    warnings: list[str] = []
    lane = WandbLane(warnings.append)
    seen: list[tuple[str, str]] = []

    def note(value: str) -> None:
        seen.append((value, threading.current_thread().name))

    def fail() -> None:
        raise ValueError("no network")

    lane.submit(note, "a")
    failing = lane.submit(fail)
    lane.submit(note, "b").result(timeout=10)
    assert failing.exception() is None
    assert [value for value, _ in seen] == ["a", "b"]
    assert all(name.startswith("nbsweep-wandb") for _, name in seen)
    assert warnings == ["W&B reporting failed: ValueError: no network"]
    asyncio.run(lane.shutdown())


def test_a_hand_out_waits_for_all_but_the_newest_offline_run():
    lane = WandbLane(lambda message: None)
    written: list[Future[None]] = [Future(), Future(), Future()]
    for writing in written:
        lane.writing_offline(writing)

    async def waits() -> int:
        pending = lane.before_a_hand_out()
        for future in written:
            if not future.done():
                future.set_result(None)
        await asyncio.gather(*pending)
        return len(pending)

    assert asyncio.run(waits()) == 2
    assert asyncio.run(waits()) == 0  # the newest stays until another joins it
    asyncio.run(lane.shutdown())

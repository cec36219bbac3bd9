"""One tenant's whole burst through a running stack: the emulator's API Gateway (the usage
plan's burst, the API function's and the authorizer's reserved concurrency, all as the template
declares them at the default DatabaseConnections) in front of the app. Tenant alpha fires
every request its burst allows at once, each held in the API function (an injected pause in
the route's view) until tenant beta's status read has answered: beta's answer is 200, not the
503 of a function whose every slot alpha holds, nor a 429 (docs/performance.md, "One tenant's
burst")."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from local_emulator.gateway_auth import spec_from_template
from local_emulator.stack import Emulator, EmulatorOptions

pytestmark = pytest.mark.e2e

HELD_ROUTE = "/api/jobs"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    options = EmulatorOptions(
        host="127.0.0.1", port=0, allow_private_hosts=False, quiet=True, tenants=("alpha", "beta")
    )
    with Emulator(options) as emu:
        yield emu


def keyed(emulator: Emulator, tenant: str) -> requests.Session:
    key = next(t.api_key for t in emulator.tenants if t.name == tenant)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    return session


class Hold:
    """Wraps the app's view of GET /api/jobs: alpha's requests wait there, counted, until
    released; anyone else's go straight through."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.entry = app.routes[HELD_ROUTE]["GET"]
        self.view: Callable[..., Any] = self.entry.view_function
        self.release = threading.Event()
        self.arrived = 0
        self.lock = threading.Lock()

    def __enter__(self) -> Hold:
        def held(*args: Any, **kwargs: Any) -> Any:
            tenant = self.app.current_request.context["authorizer"]["tenant"]
            if tenant == "alpha":
                with self.lock:
                    self.arrived += 1
                self.release.wait(30)
            return self.view(*args, **kwargs)

        self.entry.view_function = held
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.entry.view_function = self.view


def test_one_tenants_whole_burst_leaves_another_tenant_served(emulator: Emulator) -> None:
    route = spec_from_template(emulator.stack.template_path).route("GET", HELD_ROUTE)
    assert route is not None and route.api.throttle is not None
    burst, rate = route.api.throttle.burst, route.api.throttle.rate
    api = emulator.api_url
    beta = keyed(emulator, "beta")
    created = beta.post(f"{api}/api/uploads", json={}, timeout=30)
    assert created.status_code == 201, created.text
    beta_status = f"{api}/api/getProcessingStatus/{created.json()['requestId']}"
    # alpha's key in the authorizer's cache, as a tenant that has been calling: its burst then
    # goes straight to the API function (a cold burst is held at the authorizer's cap first)
    assert keyed(emulator, "alpha").get(f"{api}{HELD_ROUTE}?limit=1", timeout=30).ok
    # that request took one token of alpha's bucket; it comes back within 1/rate s: after
    # this wait the bucket is full (burst tokens) whatever the machine's speed
    time.sleep(1.5 / rate)

    app = sys.modules["app"].app  # the API function's app, as the emulator loaded it
    answers: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(burst)

    def alpha() -> None:
        session = keyed(emulator, "alpha")
        start.wait(30)
        answer = session.get(f"{api}{HELD_ROUTE}?limit=1", timeout=60)
        with lock:
            answers.append(answer.status_code)

    with Hold(app) as hold:
        threads = [threading.Thread(target=alpha) for _ in range(burst)]
        for thread in threads:
            thread.start()
        try:
            # every request of the burst is either in the function (held) or answered
            deadline = time.monotonic() + 60
            while hold.arrived + len(answers) < burst and time.monotonic() < deadline:
                time.sleep(0.01)
            assert hold.arrived + len(answers) == burst, (hold.arrived, answers)
            answer = beta.get(beta_status, timeout=30)
            held_then = hold.arrived
        finally:
            hold.release.set()
            for thread in threads:
                thread.join(60)
    assert answer.status_code == 200, (answer.status_code, answer.text, sorted(answers))
    assert held_then == burst  # alpha's whole burst was in the function when beta asked
    assert answers == [200] * burst  # and each of its requests was served

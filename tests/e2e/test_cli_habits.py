"""The command-line client by the habits of aws-cli and gh, against the emulator: global
options before or after the command, `--json` on every command (one document json.loads
reads), `--version`, profiles of a config file and their precedence, a quiet end when the
reader of stdout goes away, `retry` and `redeliver`."""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_emulator.stack import Emulator
from pipeline_cli import __version__
from pipeline_cli.cli import (
    API_ENV,
    EXIT_AUTH,
    EXIT_CLOSED_PIPE,
    EXIT_COMPLETED_WITH_ERRORS,
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    KEY_ENV,
    main,
)
from pipeline_cli.config import PROFILE_ENV
from tests.e2e.emulator_support import SAMPLES
from tests.support.servers import image_host, webhook_receiver

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
HEADER = "S. No.,Product Name,Input Image Urls\n"
WRONG_KEY = "ipk_000000000000_" + "x" * 43


def cli(*argv: str, environ: dict[str, str] | None = None, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err, environ=environ or {}, stdin=io.StringIO(stdin))
    return code, out.getvalue(), err.getvalue()


def parsed(out: str) -> object:
    return json.loads(out)  # the whole of stdout is one JSON document


def write_profiles(config_home: Path, text: str, mode: int = 0o600) -> Path:
    path = config_home / "image-pipeline" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def late_images(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """An image host whose folder the test fills in as it goes."""
    root = tmp_path / "images"
    root.mkdir()
    shutil.copy(SAMPLES / "images" / "mug.jpg", root / "mug.jpg")
    with image_host(root) as url:
        yield root, url


def test_version_names_the_client_and_exits_0() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline_cli", "--version"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"image-pipeline {__version__} (Python 3.")


def test_global_options_work_before_or_after_the_command_and_the_later_wins(
    emulator: Emulator,
) -> None:
    api, key = emulator.api_url, emulator.api_key
    for argv in (
        ["--api", api, "--api-key", key, "--json", "jobs"],
        ["jobs", "--api", api, "--api-key", key, "--json"],
        ["--api", api, "jobs", "--json", "--api-key", key],
        ["--api-key", WRONG_KEY, "--api", api, "jobs", "--api-key", key, "--json"],
    ):
        code, out, err = cli(*argv)
        assert code == EXIT_OK, (argv, err)
        assert "jobs" in parsed(out), argv  # type: ignore[operator]
    code, _, err = cli("--api", api, "--api-key", key, "jobs", "--api-key", WRONG_KEY)
    assert code == EXIT_AUTH, err


def test_every_command_answers_json_that_json_loads_reads(
    emulator: Emulator, late_images: tuple[Path, str], tmp_path: Path
) -> None:
    root, images = late_images
    csv_path = tmp_path / "products.csv"
    csv_path.write_text(HEADER + f'1,Mug,"{images}/mug.jpg,{images}/late.jpg"\n')
    auth = ["--api", emulator.api_url, "--api-key", emulator.api_key]

    code, out, err = cli(*auth, "validate", str(csv_path), "--json")
    assert code == EXIT_OK, err
    assert parsed(out) == {"valid": True, "totalProducts": 1, "totalImages": 2}

    code, out, err = cli(*auth, "submit", str(csv_path), "--json")
    assert code == EXIT_OK, err
    submitted = parsed(out)
    assert isinstance(submitted, dict)
    request_id = submitted["requestId"]
    assert submitted["statusUrl"].endswith(request_id)

    code, out, err = cli(*auth, "--json", "cancel", request_id)
    assert code in (EXIT_OK, EXIT_ERROR), err  # it may have ended already: a 409
    if code == EXIT_OK:
        assert parsed(out)["requestId"] == request_id  # type: ignore[index]
    else:
        assert out == "" and "(HTTP 409)" in err

    code, out, err = cli(*auth, "submit", str(csv_path), "--wait", "--interval", "0.2", "--json")
    assert code == EXIT_COMPLETED_WITH_ERRORS, err
    final = parsed(out)
    assert isinstance(final, dict)
    assert final["status"] == "completed_with_errors"
    request_id = final["requestId"]

    code, out, err = cli(*auth, "status", request_id, "--json")
    assert code == EXIT_OK, err
    assert parsed(out)["products"][0]["errors"][0]["code"] == "http_error"  # type: ignore[index]

    code, out, err = cli(*auth, "jobs", "--json", "--limit", "2")
    assert code == EXIT_OK, err
    assert parsed(out)["jobs"][0]["requestId"] == request_id  # type: ignore[index]

    target = tmp_path / "out.csv"
    code, out, err = cli(*auth, "download", request_id, "-o", str(target), "--json")
    assert code == EXIT_OK, err
    assert parsed(out) == {
        "requestId": request_id,
        "path": str(target),
        "bytes": target.stat().st_size,
    }
    code, out, err = cli(*auth, "download", request_id, "-o", "-", "--json")
    assert (code, out) == (EXIT_USAGE, "")
    assert "--json and -o - both want stdout" in err

    shutil.copy(SAMPLES / "images" / "mug.jpg", root / "late.jpg")
    code, out, err = cli(*auth, "retry", request_id, "--json")
    assert code == EXIT_OK, err
    answer = parsed(out)
    assert isinstance(answer, dict) and answer["requestId"] == request_id

    code, out, err = cli(*auth, "redeliver", request_id, "--json")
    assert code == EXIT_ERROR and out == "", "no webhook URL: a 409 on stderr only"
    assert "(HTTP 409)" in err

    code, out, err = cli(*auth, "--json", "status", request_id)
    assert code == EXIT_OK and parsed(out)["requestId"] == request_id  # type: ignore[index]

    config_home = tmp_path / "config"
    code, out, err = cli(
        "configure",
        "--json",
        "--profile",
        "local",
        "--api",
        emulator.api_url,
        stdin=emulator.api_key + "\n",
        environ={"XDG_CONFIG_HOME": str(config_home)},
    )
    assert code == EXIT_OK, err
    assert parsed(out) == {
        "profile": "local",
        "path": str(config_home / "image-pipeline" / "config.toml"),
        "api": emulator.api_url,
        "apiKey": emulator.api_key[:17] + "…",
    }
    assert emulator.api_key not in out + err


def test_retry_runs_the_failed_images_again_and_waits_for_the_job_to_end(
    emulator: Emulator, late_images: tuple[Path, str], tmp_path: Path
) -> None:
    root, images = late_images
    csv_path = tmp_path / "products.csv"
    csv_path.write_text(HEADER + f'1,Mug,"{images}/mug.jpg,{images}/late.jpg"\n')
    auth = ["--api", emulator.api_url, "--api-key", emulator.api_key]
    code, out, err = cli(*auth, "submit", str(csv_path), "--wait", "--interval", "0.2")
    assert code == EXIT_COMPLETED_WITH_ERRORS, out + err
    request_id = next(line.split()[1] for line in out.splitlines() if line.startswith("requestId"))

    shutil.copy(SAMPLES / "images" / "mug.jpg", root / "late.jpg")  # the image is there now
    code, out, err = cli("retry", request_id, *auth, "--wait", "--interval", "0.2")
    assert code == EXIT_OK, out + err
    assert out.startswith(f"retrying the failed images of {request_id}\n")
    assert "status     completed\n" in out
    code, out, err = cli(*auth, "status", request_id, "--json")
    product = parsed(out)["products"][0]  # type: ignore[index]
    assert product["errors"] == [] and all(product["outputImageUrls"])

    code, out, err = cli(*auth, "retry", request_id)  # nothing failed any more: a 409
    assert code == EXIT_ERROR and out == ""
    assert err.startswith(f"error: job {request_id} has no failed images to retry (HTTP 409)")


def test_redeliver_sends_the_last_webhook_again_under_its_id(
    emulator: Emulator, images: str, tmp_path: Path
) -> None:
    csv_path = tmp_path / "products.csv"
    csv_path.write_text(HEADER + f"1,Mug,{images}/mug.jpg\n")
    auth = ["--api", emulator.api_url, "--api-key", emulator.api_key]
    with webhook_receiver(emulator.webhook_secret) as hook:
        code, out, err = cli(
            *auth, "submit", str(csv_path), "--webhook-url", hook.url, "--wait", "--interval", "0.2"
        )
        assert code == EXIT_OK, out + err
        request_id = next(ln.split()[1] for ln in out.splitlines() if ln.startswith("requestId"))
        [first] = hook.wait_for(1, timeout=30)
        code, out, err = cli("redeliver", request_id, *auth)
        assert code == EXIT_OK, err
        assert out.startswith(f"webhook of {request_id} queued for delivery again")
        deliveries = hook.wait_for(2, timeout=30)
    assert len(deliveries) == 2
    assert deliveries[1].headers["webhook-id"] == first.headers["webhook-id"]
    assert json.loads(deliveries[1].body)["data"]["requestId"] == request_id


def test_a_profile_gives_the_api_and_key_and_options_then_the_environment_win(
    emulator: Emulator, tmp_path: Path
) -> None:
    """The option wins over the environment, the environment over the profile; the
    profile is --profile, else IMAGE_PIPELINE_PROFILE, else `default`."""
    home = tmp_path / "config"
    good, bad, dead = emulator.api_key, WRONG_KEY, closed_port()
    write_profiles(
        home,
        f'[profiles.default]\napi = "{emulator.api_url}"\napi_key = "{good}"\n\n'
        f'[profiles.stale]\napi = "{emulator.api_url}"\napi_key = "{bad}"\n\n'
        f'[profiles.gone]\napi = "{dead}"\napi_key = "{good}"\n',
    )
    env = {"XDG_CONFIG_HOME": str(home)}

    def outcome(*argv: str, **extra: str) -> int:
        code, out, err = cli("jobs", "--json", *argv, environ={**env, **extra})
        assert good not in out + err and bad not in out + err
        if code == EXIT_OK:
            assert "jobs" in parsed(out)  # type: ignore[operator]
        return code

    assert outcome() == EXIT_OK  # `default`: its URL and key
    assert outcome("--profile", "stale") == EXIT_AUTH  # its key is refused
    assert outcome(**{PROFILE_ENV: "stale"}) == EXIT_AUTH
    assert outcome("--profile", "default", **{PROFILE_ENV: "stale"}) == EXIT_OK  # option wins
    assert outcome("--profile", "stale", **{KEY_ENV: good}) == EXIT_OK  # env over profile
    assert outcome(**{KEY_ENV: bad}) == EXIT_AUTH  # env over profile, the other way
    assert outcome("--api-key", good, **{KEY_ENV: bad}) == EXIT_OK  # option over env
    assert outcome("--profile", "gone") == EXIT_ERROR  # its URL does not answer
    assert outcome("--profile", "gone", **{API_ENV: emulator.api_url}) == EXIT_OK
    assert outcome("--profile", "gone", "--api", emulator.api_url, **{API_ENV: dead}) == EXIT_OK

    code, out, err = cli("jobs", "--profile", "nowhere", environ=env)
    assert (code, out) == (EXIT_USAGE, "")
    assert "no profile 'nowhere' in" in err
    assert "image-pipeline configure --profile nowhere" in err


def test_a_config_file_others_can_read_is_refused_and_configure_writes_one_they_cannot(
    emulator: Emulator, tmp_path: Path
) -> None:
    home = tmp_path / "config"
    env = {"XDG_CONFIG_HOME": str(home)}
    key = emulator.api_key
    path = write_profiles(
        home, f'[profiles.default]\napi = "{emulator.api_url}"\napi_key = "{key}"\n', 0o644
    )
    code, out, err = cli("jobs", environ=env)
    assert (code, out) == (EXIT_USAGE, "")
    assert err == (
        f"error: {path} is open to others (mode 0644) and holds API keys: run "
        f"'chmod 600 {path}', and replace any key others could have read\n"
    )
    # Given everything by option and environment, the client has no need to read it.
    code, _, err = cli("jobs", "--api", emulator.api_url, environ={**env, KEY_ENV: key})
    assert code == EXIT_OK, err

    shutil.rmtree(home)  # configure makes the folder (0700) and the file (0600)
    code, out, err = cli(
        "configure", "--api", emulator.api_url, stdin=key + "\n", environ={**env, "HOME": "/x"}
    )
    assert code == EXIT_OK, err
    assert out == (
        f"wrote profile default to {path} (mode 0600): api {emulator.api_url}, key {key[:17]}…\n"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    code, _, err = cli("configure", "--profile", "other", "--api-key", WRONG_KEY, environ=env)
    assert code == EXIT_OK, err
    assert tomllib.loads(path.read_text()) == {
        "profiles": {
            "default": {"api": emulator.api_url, "api_key": key},
            "other": {"api": "http://127.0.0.1:8000", "api_key": WRONG_KEY},
        }
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]
    code, out, err = cli("--json", "jobs", environ=env)
    assert code == EXIT_OK, err
    other = {**env, PROFILE_ENV: "other", API_ENV: emulator.api_url}
    assert cli("jobs", environ=other)[0] == EXIT_AUTH  # its key
    # The default location: ~/.config when XDG_CONFIG_HOME is not set.
    at_home = {"HOME": str(tmp_path / "home")}
    code, out, err = cli("jobs", "--profile", "default", environ=at_home)
    assert (code, out) == (EXIT_USAGE, "")
    assert f"no profiles in {tmp_path}/home/.config/image-pipeline/config.toml" in err
    (tmp_path / "home" / ".config").mkdir(parents=True)
    shutil.copytree(home / "image-pipeline", tmp_path / "home" / ".config" / "image-pipeline")
    assert cli("jobs", environ=at_home)[0] == EXIT_OK


def _status_reader_closes_after(
    emulator: Emulator, request_id: str, lines: int, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """`image-pipeline status ID | head -N`, with a pipe of one page (4 KiB) so the client
    is still writing when the reader goes away, whatever the timing."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    env = {
        **os.environ,
        KEY_ENV: emulator.api_key,
        API_ENV: emulator.api_url,
        "XDG_CONFIG_HOME": str(tmp_path),
    }
    with subprocess.Popen(
        [sys.executable, "-m", "pipeline_cli", "status", request_id],
        stdout=write_end,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
        text=True,
    ) as process:
        os.close(write_end)
        with os.fdopen(read_end, "rb", buffering=0) as reader:
            seen = b""
            while seen.count(b"\n") < lines:
                chunk = reader.read(1)
                assert chunk, "the client ended before writing its first lines"
                seen += chunk
        stderr = process.stderr.read() if process.stderr else ""
        process.wait(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, seen.decode(), stderr)


def test_a_closed_pipe_ends_the_client_quietly_as_a_program_killed_by_sigpipe(
    emulator: Emulator, images: str, tmp_path: Path
) -> None:
    rows = "".join(f"{n},Product {n},{images}/nowhere-{n}.jpg\n" for n in range(1, 121))
    csv_path = tmp_path / "many.csv"
    csv_path.write_text(HEADER + rows)
    code, out, err = cli(
        "--api",
        emulator.api_url,
        "--api-key",
        emulator.api_key,
        "submit",
        str(csv_path),
        "--wait",
        "--interval",
        "0.2",
    )
    assert code == EXIT_FAILED, out + err
    request_id = next(ln.split()[1] for ln in out.splitlines() if ln.startswith("requestId"))

    result = _status_reader_closes_after(emulator, request_id, 2, tmp_path)
    assert result.stdout == f"job        {request_id}\nstatus     failed\n"
    assert result.stderr == ""  # no BrokenPipeError, no traceback, no "Exception ignored"
    assert result.returncode == EXIT_CLOSED_PIPE == 141

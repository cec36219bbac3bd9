"""The whole local stack in one object: moto, the embedded MongoDB, the template's
resources, the dispatchers and the Chalice API.

    with Emulator(EmulatorOptions(port=0, allow_private_hosts=True)) as emu:
        requests.get(f"{emu.api_url}/api/health")
        emu.s3_client().put_object(Bucket=emu.uploads_bucket, Key="incoming/x.csv", Body=b"...")

The functions read their settings from the environment, so the emulator sets the stack's
environment in `os.environ` while it runs (and restores it on stop): one emulator per
process at a time. Their secrets are not in it: as deployed, the functions read the MongoDB
URI and the tenants' signing secrets from (moto's) Secrets Manager, and the emulator hides
`MONGO_URI` and `WEBHOOK_SECRET` from them while it runs.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from local_emulator.api_server import ApiServer
from local_emulator.cdn import Fronted
from local_emulator.containers import ContainerPool
from local_emulator.credentials import StackCredentials, StorageCredentials
from local_emulator.credentials import resolve as resolve_credentials
from local_emulator.data_dir import DataDir, DataDirError, check_options, describe_state
from local_emulator.dispatch import Dispatcher, Handler, Queues, SqsApiQueues, load_handler
from local_emulator.gateway_auth import TemplateGateway, gateway_for_stack
from local_emulator.mongo import EmbeddedMongo, MongoEngine
from local_emulator.mongo_process import MongoProcess
from local_emulator.provision import (
    ACCOUNT_ID,
    REGION,
    FunctionInfo,
    ProvisionedStack,
    Provisioner,
)
from local_emulator.servers import MotoServer
from local_emulator.tenants import (
    DEFAULT_TENANTS,
    LocalTenant,
    TenantSpec,
    create_tenants,
    make_admin,
    parse_tenants,
    resume_tenants,
    tenant_order,
)
from local_emulator.timescale import scaled_app_durations, time_scale_from_env

if TYPE_CHECKING:
    from chalicelib.services.tenant_admin import Admin
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

    from local_emulator.kept_state import KeptState

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE = REPO_ROOT / "template.yaml"
WORKER_QUEUE_ENV = "ROWS_QUEUE_URL"  # the queue whose consumer gets --workers pollers
UPLOADS_BUCKET_ENV = "UPLOADS_BUCKET"
DISPATCH_CONNECTIONS = 64
WILDCARD_HOSTS = {"", "0.0.0.0", "::"}
TRUTHY = {"1", "true", "yes", "on"}
# The functions read the MongoDB URI from this secret (the template's MongoUriSecretName)...
MONGO_URI_SECRET_ENV = "MONGO_URI_SECRET_ID"  # noqa: S105 (a variable's name)
# ...and each tenant's signing secrets from <this prefix><tenant>/webhook.
TENANT_SECRETS_PREFIX_ENV = "TENANT_SECRETS_PREFIX"
# Secrets the functions never find in their environment when the template reads them from
# Secrets Manager (the emulator hides the user's, which it shares os.environ with).
SECRET_VARIABLES = ("MONGO_URI", "WEBHOOK_SECRET")
# Per execution environment (Settings' default, or the template's): container processes
# (containers.py) keep it; the emulator's own process runs every function's invocations at
# once on one MongoDB pool, which is given pymongo's default size ("0") instead.
PER_CONTAINER_VARIABLES = {"MONGO_MAX_POOL_SIZE": "0"}
# Parameters the local stack gets unless the user gives them (a deploy must). The webhook's
# schedule is not AWS's three days (11 steps up to 10 h): a local stack keeps its 45-minute
# one, which the time scale shortens further (0.25: 2, 8, 30, 150, 225, 225 s), so that its
# first three attempts come within a minute (the contract says so).
LOCAL_PARAMETERS = {
    "MongoUriSecretName": "image-pipeline/mongo-uri",
    "WebhookRetrySchedule": "5,30,120,600,900,900",
}


def _functions_wiring() -> ModuleType | None:
    """The functions' wiring module (chalicelib.bootstrap), once the stack's code is on the
    path; None for a stack whose code is not this app (a test's stand-in)."""
    try:
        from chalicelib import bootstrap
    except ImportError:
        return None
    return bootstrap


def _keep_stdout_for_the_cli(app: object) -> None:
    """Chalice logs to stdout (Lambda sends both to CloudWatch); here stdout carries the
    `storage`/`ready` lines and the demo's report, so the app's log goes to stderr."""
    log = getattr(app, "log", None)
    for handler in getattr(log, "handlers", []):
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)


def _env_flag(name: str, default: str) -> bool:
    return os.environ.get(name, default).strip().lower() in TRUTHY


@dataclass
class EmulatorOptions:
    """Everything an emulator can be told; the environment fills in what is left None."""

    host: str = "127.0.0.1"
    port: int = 8000
    allow_private_hosts: bool = False
    template: Path = DEFAULT_TEMPLATE
    workers: int | None = None  # pollers of the rows queue (default: cores + 1)
    # One factor for every duration of the stack (timescale.py); LOCAL_TIME_SCALE or 0.25.
    time_scale: float | None = None
    schedule_scale: float | None = None  # a test may run the schedules sooner still
    mongo_engine: MongoEngine | None = None  # default: sqlite with data_dir, else memory
    # Where everything is kept (objects, queued messages, secrets, tenants, the database):
    # data_dir.py. None: all in memory.
    data_dir: Path | None = None
    quiet: bool = False
    verbose_dispatch: bool = True
    start_api: bool = True
    start_dispatchers: bool = True
    parameter_overrides: Mapping[str, str] = field(default_factory=dict)
    # "NAME" or "NAME=KEY" (serve --tenant): the first is the default tenant; a key given is
    # used as is, others are new at each start. None given: the tenants data_dir keeps, else
    # DEFAULT_TENANTS.
    tenants: Sequence[str] = ()
    # The storage endpoint's one access key (serve --storage-credentials); else
    # STORAGE_ACCESS_KEY_ID/STORAGE_SECRET_ACCESS_KEY, what --data-dir keeps, or new
    # (credentials.py).
    storage_credentials: StorageCredentials | None = None
    log: Callable[[str], None] | None = None
    # The functions and the pollers reach S3 and SQS through moto's backends in this
    # process, not HTTP (LOCAL_AWS_IN_PROCESS=0 turns it off, e.g. to measure the difference).
    in_process_aws: bool | None = None
    # LOCAL_WORKER_PROCESSES=1: the rows queue's function runs in processes of its own, one
    # per concurrent invocation, as Lambda isolates it (docs/architecture.md says what each
    # mode costs).
    worker_processes: bool | None = None
    # The embedded MongoDB server in a process of its own, as the database is a service of its
    # own on AWS (mongo_process.py); LOCAL_MONGO_PROCESS=0 keeps it in a thread of this one.
    mongo_process: bool | None = None
    # The GIL's switch interval while the stack runs, in seconds (LOCAL_SWITCH_INTERVAL_MS, or
    # SWITCH_INTERVAL): the API's threads share this process's GIL with the functions', and
    # a thread back from a socket read waits up to one interval for it at each step of a
    # request (docs/performance.md, the status reads while busy).
    switch_interval: float | None = None

    def resolved(self) -> EmulatorOptions:
        """These options with the environment's defaults filled in."""
        return replace(
            self,
            time_scale=self.time_scale if self.time_scale is not None else time_scale_from_env(),
            in_process_aws=(
                self.in_process_aws
                if self.in_process_aws is not None
                else _env_flag("LOCAL_AWS_IN_PROCESS", "1")
            ),
            worker_processes=(
                self.worker_processes
                if self.worker_processes is not None
                else _env_flag("LOCAL_WORKER_PROCESSES", "0")
            ),
            mongo_process=(
                self.mongo_process
                if self.mongo_process is not None
                else _env_flag("LOCAL_MONGO_PROCESS", "1")
            ),
            switch_interval=(
                self.switch_interval
                if self.switch_interval is not None
                else _switch_interval_from_env()
            ),
        )


SWITCH_INTERVAL = 0.001  # seconds; Python's own default is 0.005


def _switch_interval_from_env() -> float:
    given = os.environ.get("LOCAL_SWITCH_INTERVAL_MS", "").strip()
    try:
        milliseconds = float(given) if given else SWITCH_INTERVAL * 1000
    except ValueError:
        raise ValueError(f"LOCAL_SWITCH_INTERVAL_MS={given!r}: a number of milliseconds") from None
    if not 0 < milliseconds <= 1000:
        raise ValueError(f"LOCAL_SWITCH_INTERVAL_MS={given!r}: more than 0, at most 1000")
    return milliseconds / 1000


class Emulator:
    """The local stack. `start()`/`stop()`, or use it as a context manager."""

    def __init__(self, options: EmulatorOptions | None = None) -> None:
        self.options = (options or EmulatorOptions()).resolved()
        opts = self.options
        self.host = opts.host
        self.port = opts.port
        self.template = Path(opts.template)
        self.allow_private_hosts = opts.allow_private_hosts
        self.workers = opts.workers
        self.time_scale = float(opts.time_scale or 1.0)
        self._schedule_scale = opts.schedule_scale
        self.data_dir = Path(opts.data_dir) if opts.data_dir is not None else None
        self.mongo_engine: MongoEngine = opts.mongo_engine or (
            "sqlite" if self.data_dir is not None else "memory"
        )
        self.quiet = opts.quiet
        self.verbose_dispatch = opts.verbose_dispatch
        self.start_api = opts.start_api
        self.start_dispatchers = opts.start_dispatchers
        self.parameter_overrides = {**LOCAL_PARAMETERS, **opts.parameter_overrides}
        self.tenant_specs: list[TenantSpec] = parse_tenants(opts.tenants or DEFAULT_TENANTS)
        self._tenants_given = bool(opts.tenants)
        self._data: DataDir | None = None  # the data directory, locked while the stack runs
        self._kept: KeptState | None = None
        self.restored: dict[str, int] = {}
        self.in_process_aws = bool(opts.in_process_aws)
        self.worker_processes = bool(opts.worker_processes)
        self._pools: list[ContainerPool] = []
        self._log: Callable[[str], None] = opts.log or (
            lambda line: print(line, file=sys.stderr, flush=True)
        )
        self._lock = threading.Lock()
        self._moto: MotoServer | None = None
        self._mongo: EmbeddedMongo | MongoProcess | None = None
        self._api: ApiServer | None = None
        self._dispatcher: Dispatcher | None = None
        self._session: boto3.session.Session | None = None
        self._stack: ProvisionedStack | None = None
        self._saved_env: dict[str, str | None] = {}
        self._added_paths: list[str] = []
        self._container_env: dict[str, str] = {}  # PER_CONTAINER_VARIABLES' values
        self._api_url = ""
        self.environment: dict[str, str] = {}
        self.tenants: list[LocalTenant] = []
        self.mongo_uri_secret = ""  # where the functions read the MongoDB URI ("": MONGO_URI)
        self.tenant_secrets_prefix = ""
        self.mongo_uri = ""
        self.embedded_mongo = False
        self._credentials: StackCredentials | None = None
        self._saved_switch_interval: float | None = None

    # -- public surface -------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return self._api_url

    @property
    def api_key(self) -> str:
        """The first (default) tenant's API key."""
        return self.tenants[0].api_key if self.tenants else ""

    @property
    def webhook_secret(self) -> str:
        """The first (default) tenant's signing secret."""
        return self.tenants[0].webhook_secret if self.tenants else ""

    @property
    def storage_url(self) -> str:
        if self._moto is None:
            raise RuntimeError("the emulator is not running")
        return self._moto.url

    @property
    def stack(self) -> ProvisionedStack:
        if self._stack is None:
            raise RuntimeError("the emulator is not running")
        return self._stack

    @property
    def dispatcher(self) -> Dispatcher | None:
        return self._dispatcher

    @property
    def uploads_bucket(self) -> str:
        named = self.environment.get(UPLOADS_BUCKET_ENV)
        if named:
            return named
        buckets = self.stack.buckets
        upload = next((b for k, b in buckets.items() if "upload" in k.lower()), None)
        if upload is not None:
            return upload.name
        if not buckets:
            raise RuntimeError("the template has no S3 bucket")
        return next(iter(buckets.values())).name

    @property
    def schedule_scale(self) -> float:
        return self._schedule_scale if self._schedule_scale is not None else self.time_scale

    @property
    def credentials(self) -> StackCredentials:
        """The storage endpoint's access key and the embedded MongoDB's user."""
        if self._credentials is None:
            raise RuntimeError("the emulator is not running")
        return self._credentials

    @property
    def storage_credentials(self) -> StorageCredentials:
        return self.credentials.storage

    def session(self) -> boto3.session.Session:
        storage = self.storage_credentials
        return boto3.session.Session(
            aws_access_key_id=storage.access_key_id,
            aws_secret_access_key=storage.secret_access_key,
            region_name=REGION,
        )

    def s3_client(self) -> S3Client:
        # SigV4, presigned URLs included: S3 refuses SigV2 on buckets made since 2020, and
        # so does the emulator's storage
        config = Config(signature_version="s3v4")
        return self.session().client("s3", endpoint_url=self.storage_url, config=config)

    def sqs_client(self) -> SQSClient:
        return self.session().client("sqs", endpoint_url=self.storage_url)

    def describe(self) -> list[str]:
        """Human-readable lines about what runs (for the CLI)."""
        stack = self.stack
        lines = [f"template {stack.template_path}"]
        lines += [f"bucket {b.name}" for b in stack.buckets.values()]
        for queue in stack.queues.values():
            dlq = (
                f", dlq {stack.queues[queue.dead_letter_target].name} "
                f"after {queue.max_receive_count}"
                if queue.dead_letter_target
                else ""
            )
            lines.append(f"queue {queue.name} (visibility {queue.visibility_timeout}s{dlq})")
        lines += stack.describe_extras()
        if self._dispatcher is not None:
            lines += [f"dispatch {d}" for d in self._dispatcher.descriptions]
        lines += [
            f"{pool.function.name} runs in processes of its own, one per concurrent invocation"
            for pool in self._pools
        ]
        lines += [
            f"function {f.name} timeout {f.timeout:g}s"
            + (f" (template {f.template_timeout}s)" if f.template_timeout != f.timeout else "")
            for f in stack.functions.values()
        ]
        lines.append(
            f"time scale {self.time_scale:g} (timeouts, visibility, schedules, app deadlines)"
            + (
                f", schedules {self.schedule_scale:g}"
                if self.schedule_scale != self.time_scale
                else ""
            )
        )
        lines.append(
            f"mongo {self.mongo_uri} ({'embedded ' + self.mongo_engine if self.embedded_mongo else 'MONGO_URI'})"  # noqa: E501
        )
        if self.mongo_uri_secret:
            lines.append(
                f"secret {self.mongo_uri_secret} holds the MongoDB URI: the functions read it "
                "from Secrets Manager (MONGO_URI is hidden from them)"
            )
        lines += [
            f"tenant {t.name}: API key hashed in MongoDB, signing secret in Secrets Manager "
            f"at {self.tenant_secrets_prefix}{t.name}/webhook"
            for t in self.tenants
        ]
        if self._stack is not None and not self._stack.usage_plans:
            lines.append("tenants have no usage key: the template has no usage plan")
        return lines

    def new_api_key(self, tenant: str | None = None, label: str = "") -> str:
        """One more API key for a tenant (default: the first), as `infra.tenants add-key`
        makes one: e.g. the demo's, when the data directory keeps the tenant's keys and none
        was made at this start."""
        from chalicelib.config import Settings
        from chalicelib.services.tenant_admin import add_key
        from pymongo import MongoClient

        name = tenant or self.tenant_specs[0].name
        mongo: MongoClient[dict[str, object]] = MongoClient(
            self.mongo_uri, serverSelectionTimeoutMS=10_000
        )
        try:
            admin = make_admin(
                mongo[Settings.from_env(os.environ).mongo_db],
                self.session().client("secretsmanager", endpoint_url=self.storage_url),
                secrets_prefix=self.tenant_secrets_prefix,
            )
            return add_key(admin, name, label=label)
        finally:
            mongo.close()

    @property
    def state_line(self) -> str:
        """One line: where the stack's state is (the data directory, or memory)."""
        return describe_state(self._data, self.restored)

    def invocation_report(self) -> list[str]:
        """Per function: invocations, timeouts and the longest invocation against its
        (scaled) Timeout, as the dispatcher counted them."""
        if self._dispatcher is None or self._stack is None:
            return []
        lines = []
        for function in self._stack.functions.values():
            stats = self._dispatcher.stats.get(function.name)
            if stats is None:
                continue
            lines.append(
                f"{function.name}: {stats.invocations} invocation(s), {stats.timeouts} timed "
                f"out, longest {stats.worst_seconds:.2f}s of its {function.timeout:g}s Timeout"
            )
        # the functions in processes of their own: their peak memory against MemorySize
        lines += [pool.memory_report() for pool in self._pools]
        return lines

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> Emulator:
        with self._lock:
            if self._moto is not None:
                raise RuntimeError("the emulator is already running")
            try:
                self._start()
            except BaseException:
                self._stop()
                raise
        return self

    def stop(self) -> None:
        with self._lock:
            self._stop()

    def _setenv(self, name: str, value: str) -> None:
        if name not in self._saved_env:
            self._saved_env[name] = os.environ.get(name)
        os.environ[name] = value

    def _unsetenv(self, name: str) -> None:
        if name not in self._saved_env:
            self._saved_env[name] = os.environ.get(name)
        os.environ.pop(name, None)

    def _start(self) -> None:
        """Each step in the order a deployed stack has them: AWS (moto), MongoDB, the
        template's resources, the functions' environment and wiring, the API, the event
        sources."""
        user_env = dict(os.environ)
        if self.options.switch_interval is not None:
            self._saved_switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(self.options.switch_interval)
        self._open_data_dir(user_env)
        local_host = "127.0.0.1" if self.host in WILDCARD_HOSTS else self.host
        self._credentials, _ = resolve_credentials(
            self.options.storage_credentials, user_env, self.data_dir
        )
        self._set_aws_environment(local_host)
        self._start_moto(local_host)
        self._start_mongo(user_env)
        self._stack = self._provision()
        self._restore_kept()
        self._stand_in_for_cdns(self._stack)
        self._set_function_environment(self._stack, user_env)
        if self.start_api:
            self._serve_api(self._stack, local_host)
        self._wire_functions()
        if self.start_dispatchers:
            self._dispatcher = self._make_dispatcher(self._stack)
            self._dispatcher.start()
        if self._api is not None:
            self._api.start()

    def _open_data_dir(self, user_env: Mapping[str, str]) -> None:
        """The data directory locked (DataDirError if another stack holds it, or if an
        option contradicts it), and what an earlier version's lacks said."""
        if self.data_dir is None:
            return
        check_options(self.data_dir, self.options.mongo_engine, user_env.get("MONGO_URI", ""))
        self._data = DataDir(self.data_dir).open()
        for line in self._data.legacy_lines():
            self._log(f"warning: {line}")

    def _restore_kept(self) -> None:
        """What the data directory keeps of S3, SQS and Secrets Manager back in moto, before
        anything runs on it; kept from now on."""
        if self._data is None:
            return
        from local_emulator.kept_state import KeptState

        self._kept = KeptState(self._data)
        self.restored = self._kept.restore(lambda line: self._log(f"warning: {line}"))

    def _set_aws_environment(self, local_host: str) -> None:
        """Credentials and region before any boto3 client exists; loopback never proxied."""
        storage = self.storage_credentials
        for name, value in {
            "AWS_ACCESS_KEY_ID": storage.access_key_id,
            "AWS_SECRET_ACCESS_KEY": storage.secret_access_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }.items():
            self._setenv(name, value)
        for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
            if name in os.environ:
                self._saved_env[name] = os.environ.pop(name)
        no_proxy = ",".join(
            filter(None, [os.environ.get("NO_PROXY", ""), "127.0.0.1,localhost", local_host])
        )
        self._setenv("NO_PROXY", no_proxy)
        self._setenv("no_proxy", no_proxy)

    def _start_moto(self, local_host: str) -> None:
        """moto's server; with a data directory on the port it had before (the output links
        handed out name it)."""
        port = self._data.kept_port("storage") if self._data is not None else 0
        self._moto = MotoServer(local_host, port, credentials=self.storage_credentials)
        try:
            self._setenv("AWS_ENDPOINT_URL", self._moto.start())
        except OSError as exc:
            if not port:
                raise
            raise DataDirError(
                f"the storage port {port}, which the output links of the stack kept in "
                f"{self.data_dir} name, cannot be bound ({exc.strerror}); free it"
            ) from exc
        if self._data is not None:
            self._data.keep_port("storage", int(self._moto.url.rsplit(":", 1)[1]))

    def _start_mongo(self, user_env: Mapping[str, str]) -> None:
        """The embedded MongoDB-compatible server, unless MONGO_URI names a real one."""
        if user_env.get("MONGO_URI"):
            self.mongo_uri = user_env["MONGO_URI"]
            return
        server = MongoProcess if self.options.mongo_process else EmbeddedMongo
        self._mongo = server(
            "127.0.0.1",
            engine=self.mongo_engine,
            data_dir=self.data_dir,
            credentials=self.credentials.mongo,
        )
        self.mongo_uri = self._mongo.start()
        self.embedded_mongo = True

    def _provision(self) -> ProvisionedStack:
        self._session = self.session()
        provisioner = Provisioner(
            self.template,
            self._session,
            time_scale=self.time_scale,
            parameter_overrides=self.parameter_overrides,
            warn=lambda message: self._log(f"warning: {message}"),
        )
        return provisioner.provision()

    def _stand_in_for_cdns(self, stack: ProvisionedStack) -> None:
        """The storage endpoint serves each distribution's buckets as the distribution would
        (local_emulator/cdn.py): their objects' reads its bucket policy allows."""
        if self._moto is None:
            raise RuntimeError("the emulator is not running")
        stack.storage_url = self._moto.url
        for cdn in stack.cdns.values():
            for bucket in cdn.buckets:
                self._moto.access.front(
                    Fronted(
                        bucket, cdn.arn, ACCOUNT_ID, stack.bucket_policies.get(bucket), cdn.cors
                    )
                )

    def _set_function_environment(
        self, stack: ProvisionedStack, user_env: Mapping[str, str]
    ) -> None:
        """The functions' code on the path and their environment in os.environ (one process
        runs them all)."""
        for function in stack.functions.values():
            if str(function.code_dir) not in sys.path:
                sys.path.insert(0, str(function.code_dir))
                self._added_paths.append(str(function.code_dir))
        self.environment = self._environment(stack, user_env)
        self._provision_secrets(stack, self.environment, user_env)
        self._container_env = {
            name: self.environment[name]
            for name in PER_CONTAINER_VARIABLES
            if name in self.environment
        }
        self.environment.update(PER_CONTAINER_VARIABLES)
        for name, value in self.environment.items():
            self._setenv(name, value)
        for name in SECRET_VARIABLES:
            if name not in self.environment:
                self._unsetenv(name)

    def _provision_secrets(
        self, stack: ProvisionedStack, env: dict[str, str], user_env: Mapping[str, str]
    ) -> None:
        """As an operator does before and after a deploy: the MongoDB URI in its secret (when
        the template reads it from one), then the tenants, with `create_tenant` (their keys'
        hashes in MongoDB, their signing secrets in Secrets Manager, their usage keys in the
        usage plan). A template that takes the URI or the default tenant's signing secret from
        the configuration (a dynamic reference) gets them there instead."""
        from pymongo import MongoClient

        from local_emulator.tenants import ensure_app_code

        ensure_app_code()
        from chalicelib.adapters.secrets_manager import SecretsManagerWriter
        from chalicelib.config import Settings

        if self._session is None:
            raise RuntimeError("the emulator is not running")
        secrets_client = self._session.client("secretsmanager")
        self.mongo_uri_secret = env.get(MONGO_URI_SECRET_ENV, "")
        if self.mongo_uri_secret:
            SecretsManagerWriter(secrets_client).put(self.mongo_uri_secret, self.mongo_uri)
        else:
            env["MONGO_URI"] = self.mongo_uri
        self.tenant_secrets_prefix = (
            env.get(TENANT_SECRETS_PREFIX_ENV) or f"{stack.stack_name}/tenants/"
        )
        plan = next(iter(stack.usage_plans.values()), None)
        mongo: MongoClient[dict[str, object]] = MongoClient(
            self.mongo_uri, serverSelectionTimeoutMS=10_000
        )
        try:
            admin = make_admin(
                mongo[Settings.from_env({**user_env, **env}).mongo_db],
                secrets_client,
                secrets_prefix=self.tenant_secrets_prefix,
                apigateway_client=self._session.client("apigateway") if plan else None,
                usage_plan_id=plan.id if plan else "",
                log=self._log,
            )
            self.tenants = self._make_tenants(admin, user_env.get("WEBHOOK_SECRET", ""))
        finally:
            mongo.close()
        env["DEFAULT_TENANT"] = self.tenant_specs[0].name
        if "WEBHOOK_SECRET" in stack.environment:  # a template from before tenants
            env["WEBHOOK_SECRET"] = self.webhook_secret

    def _make_tenants(self, admin: Admin, first_webhook_secret: str) -> list[LocalTenant]:
        """Each tenant made (create_tenants); with a data directory, the kept ones go on
        with their keys and secrets, in the order kept (tenants.py, resume_tenants)."""
        if self._data is None:
            return create_tenants(admin, self.tenant_specs, first_webhook_secret)
        kept = self._data.kept_tenants() or [t.name for t in admin.tenants.list_tenants()]
        self.tenant_specs = tenant_order(self.tenant_specs if self._tenants_given else [], kept)
        tenants = resume_tenants(
            admin, self.tenant_specs, first_webhook_secret, str(self._data.root)
        )
        self._data.keep_tenants([t.name for t in tenants])
        return tenants

    def _serve_api(self, stack: ProvisionedStack, local_host: str) -> None:
        api_function = self._api_function(stack)
        app = load_handler(api_function.handler, api_function.code_dir)
        _keep_stdout_for_the_cli(app)
        self._api = ApiServer(
            app,
            self.host,
            self.port,
            function_name=api_function.name,
            lambda_timeout=round(api_function.timeout),
            memory_size=api_function.memory_size,
            quiet=self.quiet,
            authorizer=self._gateway_auth(stack),
        )
        self._api_url = f"http://{local_host}:{self._api.address[1]}"
        self.environment["API_BASE_URL"] = self._api_url
        self._setenv("API_BASE_URL", self._api_url)

    def _gateway_auth(self, stack: ProvisionedStack) -> TemplateGateway | None:
        """API Gateway's authorizers, API keys and throttle, from the template."""
        return gateway_for_stack(
            stack,
            parameter_overrides=self.parameter_overrides,
            time_scale=self.time_scale,
            log=self._log,
        )

    def _wire_functions(self) -> None:
        """The functions build their clients anew, for this stack: with S3 and SQS served by
        moto's backends in this process when `in_process_aws` (bootstrap.use_local_aws)."""
        wiring = _functions_wiring()
        if wiring is None:
            return
        if self.in_process_aws:
            from local_emulator.inprocess import local_aws

            wiring.use_local_aws(local_aws())
        else:
            wiring.use_local_aws(None)

    def _unwire_functions(self) -> None:
        wiring = _functions_wiring()
        if wiring is not None:
            wiring.use_local_aws(None)

    def _stop(self) -> None:
        errors: list[Exception] = []
        steps: list[Callable[[], None]] = []
        if self._dispatcher is not None:
            steps.append(self._dispatcher.stop)
        if self._api is not None:
            steps.append(self._api.stop)
        steps += [pool.close for pool in self._pools]
        steps.append(self._unwire_functions)
        if self._kept is not None:
            steps.append(self._kept.close)  # before moto forgets everything
        if self._moto is not None:
            steps.append(self._moto.stop)
        if self._mongo is not None:
            steps.append(self._mongo.stop)
        if self._data is not None:
            steps.append(self._data.close)  # the lock, last
        for step in steps:
            try:
                step()
            except Exception as exc:
                errors.append(exc)
        self._dispatcher = self._api = self._moto = self._mongo = None
        self._kept = self._data = None
        self._credentials = None
        self._pools = []
        self._session = None
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env = {}
        for path in self._added_paths:
            if path in sys.path:
                sys.path.remove(path)
        self._added_paths = []
        if self._saved_switch_interval is not None:
            sys.setswitchinterval(self._saved_switch_interval)
            self._saved_switch_interval = None
        if errors:
            raise ExceptionGroup("the emulator did not stop cleanly", errors)

    # -- helpers ------------------------------------------------------------------
    def _environment(self, stack: ProvisionedStack, user_env: Mapping[str, str]) -> dict[str, str]:
        """The functions' environment: the template's, with local values where needed.

        Resource names come from the stack; settings (literals and parameters) may be
        overridden from the process environment; dynamic references get local values."""
        env: dict[str, str] = {}
        for name, value in stack.environment.items():
            source = stack.environment_sources.get(name, "setting")
            if name in SECRET_VARIABLES:
                continue  # the emulator's own (_provision_secrets)
            if source == "setting" and name in user_env:
                env[name] = user_env[name]
            elif source == "dynamic":
                if name in user_env:
                    env[name] = user_env[name]
                else:
                    self._log(f"warning: {name} is a dynamic reference; set it in the environment")
            else:
                env[name] = value
        if self.allow_private_hosts or user_env.get("ALLOW_PRIVATE_HOSTS", "").lower() in TRUTHY:
            self.allow_private_hosts = True
            env["ALLOW_PRIVATE_HOSTS"] = "1"
        for name, value in scaled_app_durations(stack.environment, self.time_scale).items():
            env[name] = user_env.get(name, value)
        for cdn in stack.cdns.values():  # links to the CDN: to its stand-in, locally
            if env.get("PUBLIC_BASE_URL") == f"https://{cdn.domain_name}":
                env["PUBLIC_BASE_URL"] = stack.public_base_url(cdn)
        if not self.start_api:  # the template's API URL is not served here
            env.pop("API_BASE_URL", None)
        return env

    @staticmethod
    def _api_function(stack: ProvisionedStack) -> FunctionInfo:
        serving = [f for f in stack.functions.values() if f.serves_api]
        if serving:
            return serving[0]
        candidates = list(stack.functions.values())
        if not candidates:
            raise RuntimeError("the template has no AWS::Serverless::Function")
        first = candidates[0]
        return FunctionInfo(
            logical_id="Api",
            name=f"{stack.stack_name}-Api",
            handler="app.app",
            code_dir=first.code_dir,
            timeout=30,
            memory_size=first.memory_size,
            arn=first.arn.rsplit(":", 1)[0] + f":{stack.stack_name}-Api",
        )

    def _make_dispatcher(self, stack: ProvisionedStack) -> Dispatcher:
        worker_url = self.environment.get(WORKER_QUEUE_ENV, "")

        def load(function: FunctionInfo) -> Handler:
            consumes_rows = any(s.queue.url == worker_url for s in function.sqs_sources)
            if self.worker_processes and consumes_rows:
                environment = {
                    k: v for k, v in os.environ.items() if k not in PER_CONTAINER_VARIABLES
                }
                pool = ContainerPool(function, environment | self._container_env)
                self._pools.append(pool)
                return pool
            return load_handler(function.handler, function.code_dir)

        dispatcher = Dispatcher(
            self._queues(),
            REGION,
            log=self._log,
            verbose=self.verbose_dispatch,
            handler_loader=load,
        )
        dead_letter_queues = stack.dead_letter_queue_ids()
        cores = os.cpu_count() or 1
        for function in stack.functions.values():
            for source in function.sqs_sources:
                if source.queue.url == worker_url:
                    # one batch in flight more than cores: while one waits on downloads, stores
                    # or its last images, the cores stay busy (measured: docs/performance.md)
                    pollers = self.workers or max(2, cores + 1)
                elif source.queue.logical_id in dead_letter_queues:
                    pollers = 1
                else:
                    pollers = 2
                dispatcher.add_sqs(function, source, pollers)
            for schedule in function.schedules:
                dispatcher.add_schedule(function, schedule, self.schedule_scale)
        return dispatcher

    def _queues(self) -> Queues:
        """The pollers' SQS: moto's backend in this process, as the functions' calls are
        (idle long polls cost a condition wait there, a request a second each over HTTP:
        docs/performance.md), or its HTTP API."""
        if self.in_process_aws:
            from local_emulator.inprocess import InProcessQueues

            return InProcessQueues()
        return SqsApiQueues(self._sqs())

    def _sqs(self) -> SQSClient:
        if self._session is None:
            raise RuntimeError("the emulator is not running")
        # one connection per poller thread: an SQS client's default pool of 10 is smaller than
        # the dispatcher's pollers, and every connection it drops is a new one to moto
        config = Config(max_pool_connections=DISPATCH_CONNECTIONS)
        client: SQSClient = self._session.client(
            "sqs", endpoint_url=self.storage_url, config=config
        )
        return client

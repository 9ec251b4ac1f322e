"""Fine-tuned adapters in vLLM: loaded on first use, the most used kept, the rest unloaded.

- **Where vLLM reads them.** An adapter is copied from the artifact store (a local directory, or S3 by
  its manifest, hashes checked) into `TUNEFORGE_VLLM_ADAPTERS_DIR/<name>/`, a disk vLLM reads at the same
  path (a shared volume in compose), then loaded with `POST /v1/load_lora_adapter`. A job's final adapter
  and each checkpoint's are separate names. Copies are written beside their place and renamed in, so
  vLLM never reads half a folder.
- **Which stay loaded.** At most TUNEFORGE_VLLM_MAX_ADAPTERS per API process, least recently used
  unloaded first (`/v1/unload_lora_adapter`), never one with a request in flight. Several API processes
  share one vLLM: a name another process unloaded answers 404 there and is loaded again.
- **After a vLLM restart** every adapter is gone from it. A request for one answers 404, the pool forgets
  the name and loads it again, once; a connection failure forgets them all (503 to the client meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
from starlette.concurrency import run_in_threadpool

from tuneforge.app.core.config import Settings
from tuneforge.app.core.errors import APIError, NotFound, UpstreamError
from tuneforge.app.core.storage import get_store
from tuneforge.app.inference.vllm import client as vllm
from tuneforge.storage import ManifestMismatch, StoreError, StoreMissing, fetch_folder, read_manifest

log = logging.getLogger("tuneforge.inference.vllm")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def adapter_name(key: str) -> str:
    """vLLM's name for the adapter stored at `key` (`artifacts/<job>/adapter`, or a checkpoint's
    `artifacts/<job>/checkpoints/<step>/adapter`): stable, unique, and never a tenant's `ft:` name."""
    inner = key.removeprefix("artifacts/").removesuffix("/adapter").replace("/checkpoints/", "-")
    return "lora-" + re.sub(r"[^A-Za-z0-9._-]+", "-", inner).strip("-")


def adapters_dir(settings: Settings) -> Path:
    return settings.vllm_adapters_dir or settings.data_dir / "vllm-adapters"


def _gone(key: str) -> NotFound:
    return NotFound(f"The model's adapter files are missing ({key}).", param="model", code="model_not_found")


def materialize(settings: Settings, key: str, name: str) -> Path:
    """`<adapters dir>/<name>` holding the adapter stored at `key` (blocking: run in a thread)."""
    root = adapters_dir(settings)
    dest = root / name
    if all((dest / f).is_file() for f in ADAPTER_FILES):
        return dest  # adapters are immutable once published
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{name}-{uuid.uuid4().hex[:8]}"
    store = get_store(settings)
    try:
        local = store.local_path(key)
        if local is not None:
            if not all((local / f).is_file() for f in ADAPTER_FILES):
                raise _gone(key)
            tmp.mkdir()
            for f in ADAPTER_FILES:
                shutil.copyfile(local / f, tmp / f)
        else:
            # A checkpoint's manifest sits on its step folder, one level above its adapter.
            owner, sub = key, ""
            if "/checkpoints/" in key and key.endswith("/adapter"):
                owner, sub = key.removesuffix("/adapter"), "adapter/"
            manifest = read_manifest(store, owner)
            if manifest is None:
                raise _gone(key)
            names = {sub + f for f in ADAPTER_FILES}
            wanted = {rel.removeprefix(sub): d for rel, d in manifest.items() if rel in names}
            if len(wanted) != len(ADAPTER_FILES):
                raise _gone(key)
            fetch_folder(store, f"{owner}/{sub}".rstrip("/"), wanted, tmp)
        with contextlib.suppress(OSError):  # another process put it there first: the same bytes
            tmp.rename(dest)
        return dest
    except ManifestMismatch as exc:  # never hand vLLM bytes that are not the ones training recorded
        log.error("adapter %s does not match its manifest: %s", key, exc)
        message = "The model's adapter files do not match their recorded hashes; the operator has been told."
        raise UpstreamError(500, message, param="model", code="adapter_corrupt") from exc
    except StoreMissing as exc:  # listed in the manifest, gone from the store
        raise _gone(key) from exc
    except StoreError as exc:
        raise vllm.unavailable(settings, "the artifact store is unreachable") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class AdapterPool:
    """The adapters this API process has loaded into vLLM, least recently used first."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loaded: OrderedDict[str, None] = OrderedDict()
        self.in_use: dict[str, int] = {}
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def use(self, key: str) -> AsyncIterator[str]:
        """vLLM's name for the adapter at `key`, loaded, and held (not unloaded) until the block ends."""
        name = adapter_name(key)
        self.in_use[name] = self.in_use.get(name, 0) + 1
        try:
            await self.ensure(key, name)
            yield name
        finally:
            self.in_use[name] -= 1
            if not self.in_use[name]:
                del self.in_use[name]
            if len(self.loaded) > self.settings.vllm_max_adapters:
                await self._evict_now()

    async def _evict_now(self) -> None:
        """Unload what a load had to keep because every adapter was busy then; a failure waits for the next."""
        with anyio.CancelScope(shield=True):  # the request's task may be cancelled: finish the unload
            try:
                async with self._lock:
                    await self._evict()
            except APIError as exc:
                log.warning("could not unload adapters from vLLM: %s", exc.message)

    async def ensure(self, key: str, name: str) -> None:
        if name in self.loaded:
            self.loaded.move_to_end(name)
            return
        async with self._lock:  # one load at a time: concurrent first requests for a name load it once
            if name in self.loaded:
                self.loaded.move_to_end(name)
                return
            path = await run_in_threadpool(materialize, self.settings, key, name)
            await self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path)}, loading=True)
            self.loaded[name] = None
            log.info("loaded adapter %s into vLLM (%d loaded)", name, len(self.loaded))
            await self._evict()

    async def _evict(self) -> None:
        while len(self.loaded) > self.settings.vllm_max_adapters:
            idle = next((n for n in self.loaded if not self.in_use.get(n)), None)
            if idle is None:
                return  # every loaded adapter has a request in flight; unload later
            del self.loaded[idle]
            await self._post("/v1/unload_lora_adapter", {"lora_name": idle}, loading=False)
            log.info("unloaded adapter %s from vLLM (least recently used)", idle)

    def forget(self, name: str) -> None:
        """vLLM no longer has `name` (restarted, or another API process unloaded it)."""
        self.loaded.pop(name, None)

    def forget_all(self) -> None:
        self.loaded.clear()

    async def _post(self, path: str, body: dict[str, str], *, loading: bool) -> None:
        try:
            r = await vllm.client(self.settings).post(path, json=body)
        except httpx.HTTPError as exc:
            self.forget_all()
            raise vllm.transport_error(self.settings, exc) from exc
        if r.status_code == 200:
            return
        text = r.content
        # Already there (another API process loaded it) or already gone: the state we wanted.
        if loading and b"already been loaded" in text:
            return
        if not loading and r.status_code in (400, 404):
            return
        if r.status_code == 400 and loading:
            # vLLM refused this adapter (its rank above --max-lora-rank, modules it cannot serve).
            message = vllm.error_of(r.status_code, text, self.settings).message
            message = f"The inference server cannot load this model: {message}"
            raise UpstreamError(400, message, param="model", code="model_not_supported")
        raise vllm.error_of(r.status_code, text, self.settings)


_pools: dict[tuple[int, str], AdapterPool] = {}


def pool(settings: Settings) -> AdapterPool:
    """This process's pool for the vLLM at TUNEFORGE_VLLM_URL (one per event loop, as its lock is)."""
    key = (id(asyncio.get_running_loop()), settings.vllm_url)
    found = _pools.get(key)
    if found is None:
        found = _pools[key] = AdapterPool(settings)
    return found

"""The organization's upload slots (tuneforge/app/core/limits.py): each upload request streams a
body to disk and may validate a whole file, so one tenant's dozens at once would take the API's disk
bandwidth and CPU from everyone. Taken before the body is read, held until the response is sent.

Before the slot, the request counts against the organization's upload rate (tuneforge/app/core/rates.py):
the slots bound how many run at once, the rate how many start a minute (small uploads finish fast)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends

from tuneforge.app.core.limits import InFlightKind, hold
from tuneforge.app.core.rates import RateKind, take
from tuneforge.app.deps import PrincipalDep, SettingsDep


async def upload_slot(settings: SettingsDep, principal: PrincipalDep) -> AsyncIterator[None]:
    await take(settings, principal.organization_id, RateKind.UPLOAD)
    async with hold(settings, principal.organization_id, InFlightKind.UPLOAD):
        yield


UploadSlot = Annotated[None, Depends(upload_slot)]

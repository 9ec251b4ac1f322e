"""The organization's upload slots (tuneforge/app/core/limits.py): each upload request streams a
body to disk and may validate a whole file, so one tenant's dozens at once would take the API's disk
bandwidth and CPU from everyone. Taken before the body is read, held until the response is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends

from tuneforge.app.core.limits import InFlightKind, hold
from tuneforge.app.deps import PrincipalDep, SettingsDep


async def upload_slot(settings: SettingsDep, principal: PrincipalDep) -> AsyncIterator[None]:
    async with hold(settings, principal.organization_id, InFlightKind.UPLOAD):
        yield


UploadSlot = Annotated[None, Depends(upload_slot)]

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from services.notifications.runtime import runtime
from shared.web import make_app

SessionDep = Annotated[Session, Depends(runtime.get_session)]

app = make_app(service="notifications", settings=runtime.settings, engine=lambda: runtime.engine,
               title="FAMA notifications")

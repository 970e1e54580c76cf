from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from shared.db import make_metadata
from shared.replica import meeting_replica_table


class Base(DeclarativeBase):
    metadata = make_metadata()


meeting_replica = meeting_replica_table(Base.metadata)

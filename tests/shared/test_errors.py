"""One domain error type answered by one handler, one unit of work for a request's changes."""

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, func, select
from sqlalchemy.orm import Session

from shared import errors
from shared.db import unit_of_work


def test_each_refusal_answers_with_its_own_status_and_body():
    app = FastAPI()
    errors.register(app)

    @app.get("/{what}")
    def refuse(what: str):
        raise {"invalid": errors.InvalidInput("day", "must be 0-6"), "missing": errors.NotFound("no meeting 'x'"),
               "clash": errors.Conflict("already there"), "hidden": errors.Forbidden("not your region")}[what]

    client = TestClient(app)
    invalid = client.get("/invalid")
    assert invalid.status_code == 422
    assert invalid.json() == {"detail": "day: must be 0-6",
                              "errors": [{"field": "day", "message": "must be 0-6", "type": "invalid"}]}
    assert client.get("/missing").status_code == 404 and client.get("/missing").json() == {"detail": "no meeting 'x'"}
    assert client.get("/clash").status_code == 409 and client.get("/hidden").status_code == 403


def test_unit_of_work_keeps_a_success_and_undoes_a_failure():
    engine = create_engine("sqlite://")
    rows = Table("rows", MetaData(), Column("id", Integer, primary_key=True))
    rows.metadata.create_all(engine)
    with Session(engine) as session:
        with unit_of_work(session):
            session.execute(rows.insert().values(id=1))
        with pytest.raises(errors.InvalidInput), unit_of_work(session):
            session.execute(rows.insert().values(id=2))
            raise errors.InvalidInput("id", "refused after writing")
    with Session(engine) as fresh:
        assert fresh.scalar(select(func.count()).select_from(rows)) == 1

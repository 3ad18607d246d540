"""Privacy budgets as the nodes report them: a researcher asks what remains.

The budget itself lives at each node (:mod:`consortia.privacy.disclosure`); the
hub never decides it.  After every study that spends budget, a node reports the
researcher's spend and cap per dataset; a researcher reads only their own rows.
"""

import time
from typing import Any, cast

import sqlalchemy as sa
from fastapi import Depends, FastAPI
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Mapped, Session

from consortia.hub.db import Base

__all__ = [
    "BudgetReport",
    "add_budget_routes",
    "budgets_of",
    "create_budget_table",
    "record_budget",
]


class BudgetRow(Base):
    """The latest budget report of one node for one (researcher, dataset)."""

    __tablename__ = "node_budgets"
    node: Mapped[str] = sa.orm.mapped_column(sa.String(128), primary_key=True)
    researcher: Mapped[str] = sa.orm.mapped_column(sa.String(256), primary_key=True)
    dataset: Mapped[str] = sa.orm.mapped_column(sa.String(256), primary_key=True)
    epsilon_spent: Mapped[float] = sa.orm.mapped_column(sa.Float, nullable=False)
    epsilon_cap: Mapped[float] = sa.orm.mapped_column(sa.Float, nullable=False)
    delta_spent: Mapped[float] = sa.orm.mapped_column(sa.Float, nullable=False)
    delta_cap: Mapped[float] = sa.orm.mapped_column(sa.Float, nullable=False)
    updated_at: Mapped[float] = sa.orm.mapped_column(sa.Float, nullable=False)


class BudgetReport(BaseModel):
    """A node's report of one researcher's privacy spend on one dataset."""

    model_config = ConfigDict(extra="forbid")

    researcher: str = Field(min_length=1, max_length=256)
    dataset: str = Field(min_length=1, max_length=256)
    epsilon_spent: float = Field(ge=0, allow_inf_nan=False)
    epsilon_cap: float = Field(ge=0, allow_inf_nan=False)
    delta_spent: float = Field(ge=0, le=1, allow_inf_nan=False)
    delta_cap: float = Field(ge=0, le=1, allow_inf_nan=False)


def create_budget_table(engine: sa.Engine) -> None:
    """Make the budget reports' table if it is missing."""
    # ``__table__`` is typed as a FromClause: a declarative class's is a Table
    cast(sa.Table, BudgetRow.__table__).create(engine, checkfirst=True)


def record_budget(engine: sa.Engine, node: str, body: BudgetReport) -> dict[str, str]:
    """Record ``node``'s latest report of a researcher's spend on a dataset."""
    with Session(engine) as s:
        row = s.get(BudgetRow, (node, body.researcher, body.dataset))
        if row is None:
            row = BudgetRow(node=node, researcher=body.researcher, dataset=body.dataset)
            s.add(row)
        for k, v in body.model_dump().items():
            setattr(row, k, v)
        row.updated_at = time.time()
        s.commit()
    return {"status": "recorded"}


def budgets_of(engine: sa.Engine, researcher: str) -> list[dict[str, Any]]:
    """``researcher``'s remaining privacy budget at each node and dataset that reported one."""
    with Session(engine) as s:
        rows = s.scalars(
            sa.select(BudgetRow)
            .where(BudgetRow.researcher == researcher)
            .order_by(BudgetRow.node, BudgetRow.dataset)
        ).all()
        return [
            {
                "node": r.node,
                "dataset": r.dataset,
                "epsilon_spent": r.epsilon_spent,
                "epsilon_remaining": max(r.epsilon_cap - r.epsilon_spent, 0.0),
                "delta_spent": r.delta_spent,
                "delta_remaining": max(r.delta_cap - r.delta_spent, 0.0),
            }
            for r in rows
        ]


def add_budget_routes(app: FastAPI, engine: sa.Engine, node_dep: Any, researcher_dep: Any) -> None:
    """Add ``PUT /v1/node/budget`` (nodes) and ``GET /v1/budget`` (researchers) to ``app``."""
    create_budget_table(engine)

    @app.put("/v1/node/budget", tags=["node"])
    def report(body: BudgetReport, who: Any = Depends(node_dep)) -> dict[str, str]:  # noqa: B008
        """Record this node's latest report of a researcher's spend on a dataset."""
        return record_budget(engine, who.name, body)

    @app.get("/v1/budget", tags=["researcher"])
    def budget(who: Any = Depends(researcher_dep)) -> list[dict[str, Any]]:  # noqa: B008
        """The caller's remaining privacy budget at each node and dataset that reported one."""
        return budgets_of(engine, who.name)

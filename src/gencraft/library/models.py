"""The library's tables (SQLAlchemy 2 declarative models).

One row per generated item: the text or image, the prompt, parameters, model, provenance manifest
and guard results, plus the person's rating. The schema is created and upgraded by the Alembic
migrations in ``gencraft/library/migrations`` -- never by ``create_all`` -- so a database made by an
older gencraft is upgraded in place.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Item(Base):
    """One generated thing (a completion, a chat reply, an image, a kit result)."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)  # completion|chat|image|write|game|ads|...
    model: Mapped[str] = mapped_column(String(512), index=True, default="")
    prompt: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    image: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # PNG bytes
    media_type: Mapped[str] = mapped_column(String(64), default="text/plain")
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    guard: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    rating: Mapped[int] = mapped_column(Integer, default=0, index=True)  # -1 down, 0 none, +1 up
    note: Mapped[str] = mapped_column(Text, default="")
    api_key: Mapped[str | None] = mapped_column(String(64), nullable=True)  # id of the key that made it

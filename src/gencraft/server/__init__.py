"""The studio server: an OpenAI-compatible API, the gencraft kits and library, and the web studio.

``create_app(ServerConfig(...))`` builds the FastAPI app; ``gencraft serve`` runs it (see
:mod:`gencraft.server.app`). Requests for one model are batched continuously
(:mod:`gencraft.server.scheduler`).
"""

from gencraft.server.app import ServerConfig, create_app

__all__ = ["ServerConfig", "create_app"]

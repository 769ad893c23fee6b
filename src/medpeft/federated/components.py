"""The deployment's Flower app components (``flwr-clientapp`` / ``flwr-serverapp`` load them).

Flower starts one ClientApp process per message: each skips the optional packages the apps
never use before importing them (:mod:`medpeft.startup`), 4 s less CPU per message.
"""
from medpeft.startup import skip_unused_optional_packages

skip_unused_optional_packages()

from medpeft.federated.app import client_app, server_app  # noqa: E402

__all__ = ["client_app", "server_app"]

"""The join-token host service that server node attestors receive, backed by the datastore."""

from __future__ import annotations

from pyspire_sdk.model import JoinToken
from pyspire_sdk.plugins.datastore import DataStore


class DataStoreJoinTokens:
    """Consumes join tokens in one datastore transaction, so a token can never be used twice."""

    def __init__(self, datastore: DataStore) -> None:
        self._datastore = datastore

    async def consume(self, token: str) -> JoinToken:
        return await self._datastore.consume_join_token(token)

"""AWS index adapters: the TagIndex (`index.py`, its items in `items.py`, search reads in
`search.py`) and the ConfigStore (`config.py`) in one DynamoDB table (`table.py`)."""

from chalicelib.storage.dynamo.config import DynamoConfigStore
from chalicelib.storage.dynamo.index import DynamoTagIndex
from chalicelib.storage.dynamo.table import create_table, table_definition

__all__ = ["DynamoConfigStore", "DynamoTagIndex", "create_table", "table_definition"]

"""What every long-running part of the project shares: how it starts and stops (``lifecycle``)
and how it waits between retries (``backoff``). Imported by ``bus/``, ``gateway/`` and
``pipelines/``; it imports none of them."""

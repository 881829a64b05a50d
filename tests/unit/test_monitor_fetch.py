"""The monitor stage's consumer asks the broker to hold a fetch at most MONITOR_FETCH_WAIT_MS (streams/app.py says why)."""

from __future__ import annotations

import asyncio
import inspect

import aiokafka

from schemas.config import parse_monitor_config
from streams.app import MONITOR_FETCH_WAIT_MS, create_app
from streams.settings import load_settings

CONFIG = "models: {m: {task: classification, performance: {threshold: 0.8}}}"


def test_the_monitor_consumer_is_built_with_the_short_fetch_wait(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def build() -> aiokafka.AIOKafkaConsumer:
        settings = load_settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path, app_id="fetch-wait")
        app = create_app(settings, parse_monitor_config(CONFIG))
        # Built, not started: nothing connects.
        return app.consumer._thread._create_worker_consumer(app.transport)

    consumer = asyncio.run(build())
    assert isinstance(consumer, aiokafka.AIOKafkaConsumer)
    assert consumer._fetch_max_wait_ms == MONITOR_FETCH_WAIT_MS < 1500


def test_aiokafka_hands_the_attribute_to_its_fetcher() -> None:
    # The attribute set above is aiokafka's own: its start() passes it to the fetcher it makes.  If a new aiokafka
    # reads the wait from elsewhere, this fails rather than the setting going silently unused.
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(aiokafka.AIOKafkaConsumer.start)

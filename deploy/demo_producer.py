"""The compose stack's demo producer: replay the speech scenario into the broker with the app client, then exit."""

from __future__ import annotations

import sys

from streams.client import PredictionLogger
from streams.scenarios import SpeechScenario
from streams.settings import load_settings


def main() -> int:
    settings = load_settings()
    scenario = SpeechScenario()
    logger = PredictionLogger(settings.confluent_config(), settings.topics)
    for prediction, outcome in scenario.events():
        logger.log_prediction(prediction)
        logger.log_outcome(outcome)
    undelivered = logger.flush(60)
    print(f"sent {logger.stats.n_delivered} events, {undelivered} undelivered")
    return 1 if undelivered else 0


if __name__ == "__main__":
    sys.exit(main())

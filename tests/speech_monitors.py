"""The speech model's monitors, shared by the tests that drive SpeechScenario (unit and integration tiers)."""

SPEECH_MONITORS = """\
models:
  speech-asr:
    task: classification
    performance: {metric: accuracy, window: 500, threshold: 0.85, hysteresis: 0.02}
    detector: {name: bernoulli_glr, params: {false_alarm_horizon: 100000}}
    retrain: {cooldown_seconds: 3600}
"""

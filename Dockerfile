# The driftline image: the worker, the retrainer, topic creation and the demo producer (docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY detectors detectors
COPY retrainer retrainer
COPY streams streams
# The mlflow extra (its REST client, mlflow-skinny) lets the retrainer use DRIFTLINE_REGISTRY=mlflow;
# build with --build-arg EXTRAS= for an image without it.
ARG EXTRAS=mlflow
# The retrainer's and the calibration directories exist in the image so that named volumes mounted there start
# owned by driftline.
RUN pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}" && useradd --system --create-home driftline \
    && mkdir -p /var/lib/driftline/retrainer /var/lib/driftline/calibration && chown -R driftline /var/lib/driftline
USER driftline
ENV DRIFTLINE_WEB_HOST=0.0.0.0 DRIFTLINE_DATA_DIR=/var/lib/driftline
ENTRYPOINT ["driftline"]
CMD ["--help"]

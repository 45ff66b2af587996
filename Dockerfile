# clipsae: the app (and the whole CLI) in a container. GPU-ready: the registry's torch
# wheels carry CUDA, so the host needs only the NVIDIA driver and `docker run --gpus all`.
#
#   docker build -t clipsae .
#   docker run --rm -p 127.0.0.1:7860:7860 -v clipsae-models:/models clipsae                 # the demo
#   docker run --rm --gpus all -p 127.0.0.1:7860:7860 -v clipsae-models:/models \
#       -v "$PWD/my_atlases:/data:ro" clipsae                      # /data/atlas (+ /data/katlas, /data/images)
#
# Inside the container the server listens on 0.0.0.0 so the published port reaches it;
# publish it on 127.0.0.1 (as above) unless the network in front is trusted.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/models/huggingface \
    TORCH_HOME=/models/torch \
    GRADIO_ANALYTICS_ENABLED=False \
    MPLCONFIGDIR=/tmp/matplotlib

RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin clipsae \
    && mkdir -p /models /data /app \
    && chown clipsae:clipsae /models /data /app

WORKDIR /app

# The runtime only (no test or interop extras), at the tested versions of constraints.txt.
# Dependencies first: this layer is rebuilt only when those two files change.
COPY requirements.txt constraints.txt ./
RUN pip install --no-cache-dir -r requirements.txt -c constraints.txt

COPY --chown=clipsae:clipsae pyproject.toml README.md ./
COPY --chown=clipsae:clipsae sae_core ./sae_core
COPY --chown=clipsae:clipsae precompute ./precompute
COPY --chown=clipsae:clipsae app ./app
COPY --chown=clipsae:clipsae evaluation ./evaluation
RUN pip install --no-cache-dir --no-deps .

USER 1000:1000

# Model weights (Hugging Face / OpenCLIP cache) and the demo cache persist on this volume.
VOLUME ["/models"]
EXPOSE 7860

HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/', timeout=8)"]

# Serves /data/atlas (with /data/katlas as the steering atlas and /data/images as the images
# root when present), else builds (once, cached on /models) and serves the embedded demo.
CMD ["clipsae", "up", "--data", "/data", "--cache-dir", "/models/demo_cache", "--host", "0.0.0.0", "--port", "7860"]

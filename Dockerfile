# One image for every service in docker-compose.yml: the API, the workers, the
# reconciler and the one-off migration differ only in their `digits ...` command.
#
#   docker build -t digits .                       # CPU torch (small image)
#   docker build -t digits --build-arg TORCH_INDEX=https://pypi.org/simple .   # CUDA torch
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# torch first, in its own layer, from PyTorch's CPU wheel index: the same version that
# constraints.txt pins (torch==2.14.1 also matches the local version 2.14.1+cpu) without
# the ~3 GB of CUDA libraries that the PyPI wheel pulls in. Workers on GPU hosts build
# with --build-arg TORCH_INDEX=https://pypi.org/simple to get the CUDA wheel instead.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY constraints.txt ./
RUN TORCH_PINS="$(grep -E '^(torch|torchvision)==' constraints.txt)" \
    && pip install --index-url "$TORCH_INDEX" $TORCH_PINS

# Then the project with its model-side extras, every version fixed by constraints.txt.
COPY . .
RUN pip install -c constraints.txt '.[ml]'

# The trained model ships in the image (run `digits train` before building, or mount a
# folder over /app/models). Installed as a package, the code no longer sits beside
# models/, so say where it is.
ENV DIGITS_MODEL_PATH=/app/models/digits-cnn.safetensors \
    DIGITS_STATE_DIR=/app/var

RUN useradd --create-home --uid 10001 digits \
    && mkdir -p /app/var && chown digits /app/var
USER digits

EXPOSE 8000
CMD ["digits", "api", "--host", "0.0.0.0", "--port", "8000"]

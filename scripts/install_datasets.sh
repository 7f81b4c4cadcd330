#!/bin/sh
# Install the real-image data sets the Fashion-MNIST reproduction track reads
# (configs/paper-fmnist/): Debian's package dataset-fashion-mnist puts the four IDX files in
# /usr/share/datasets/fashion-mnist/, the default data.path of data.name = "fashion_mnist".
# Needs root (or sudo) and a Debian/Ubuntu package mirror.
set -eu
if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    echo "fashion-mnist: already installed in /usr/share/datasets/fashion-mnist"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
$SUDO apt-get update
$SUDO apt-get install -y dataset-fashion-mnist
ls /usr/share/datasets/fashion-mnist

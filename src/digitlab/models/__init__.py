"""Networks: plain nn.Modules built from primitive arguments (the constructor is the schema)."""

from digitlab.models.convnet import ConvNet
from digitlab.models.lenet import LeNet
from digitlab.models.mlp import MLP

__all__ = ["MLP", "LeNet", "ConvNet"]

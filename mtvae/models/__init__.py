"""Models. Each exposes ``loss_terms(batch) -> Terms`` and holds no training-loop code."""

from mtvae.models.capacity import CapacityVAE
from mtvae.models.classifier import Classifier
from mtvae.models.cvae import ConditionalVAE
from mtvae.models.hetero import HeteroVAE
from mtvae.models.hierarchical import HierarchicalVAE as HierarchicalVAE
from mtvae.models.multimodal import MultimodalVAE as MultimodalVAE
from mtvae.models.multitask import MultitaskVAE as MultitaskVAE
from mtvae.models.prior import CodePrior
from mtvae.models.vae import VAE
from mtvae.models.vqvae import VQVAE

__all__ = ["VAE", "VQVAE", "CapacityVAE", "Classifier", "CodePrior", "ConditionalVAE",
           "HeteroVAE"]

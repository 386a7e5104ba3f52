"""The EPS / EPS++ method as MMSegmentation components: importing this package registers them."""
from .cam_head import CAMHead
from .checkpoints import CrashSafeCheckpointHook
from .classification_loss import MultiLabelBCELoss
from .crf import DenseCRF
from .datasets import SyntheticShapesDataset, WSSSCOCODataset, WSSSVOCDataset
from .eps_classifier import EPSClassifier
from .eps_loss import EPSLoss
from .ird_diagnostics import IRDDiagnosticsHook
from .ird_loss import IRDLoss
from .metrics import PerClassIoUMetric
from .pamr import PAMR
from .pamr_hook import PAMRHook
from .transforms import LoadSaliencyErrors, LoadSaliencyMap, PackWSSSInputs

__all__ = [
    'CAMHead', 'MultiLabelBCELoss', 'EPSLoss', 'IRDLoss', 'PAMR', 'DenseCRF',
    'EPSClassifier',
    'PAMRHook', 'IRDDiagnosticsHook', 'CrashSafeCheckpointHook', 'PerClassIoUMetric',
    'WSSSVOCDataset', 'SyntheticShapesDataset', 'WSSSCOCODataset',
    'LoadSaliencyMap', 'LoadSaliencyErrors', 'PackWSSSInputs'
]

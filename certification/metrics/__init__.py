"""Certification metrics: each one a short polars expression next to its recipe (docs/certification.md).

Every function takes the published dataset frame(s) and returns a plain float (or a dict of them),
so any value in a certification record can be recomputed from the datasets alone. Statistics
conventions: median = midpoint median (polars' `median`); quantiles use linear interpolation; std
uses ddof = 1; ln is the natural log; a "share" is a fraction in [0, 1].

One module per thing measured: s1 (site weights), s3 (day effects), s4 (group weights and the
topology floor), veto (S4 against the raw mix: the data reference and the anti-artifact veto gates),
breadth (merchant concentration, day-effect memory, holidays, local time), cohorts (diagnostic).
"""

from __future__ import annotations

from ._common import _CELL, _MD, _SITE_PK  # noqa: F401 (the key lists, for callers that build frames)
from .breadth import (  # noqa: F401 (re-exported)
    FAR_HOURS,
    NIGHT_HOURS,
    SERIES,
    day_effect_memory,
    holiday_effects,
    merchant_concentration,
    night_share_gap,
)
from .cohorts import (  # noqa: F401 (re-exported)
    DEFAULT_SIZE_BUCKETS,
    cohort_tables,
    merchant_cohorts,
    s3_s4_cohorts,
)
from .s1 import (  # noqa: F401 (re-exported)
    S1_METRICS,
    UNIFORM_TOLERANCE,
    s1_cohorts,
    t_s1_01_residual_median,
    t_s1_02_top_gap_median,
    t_s1_03_hhi_iqr,
    t_s1_04_uniform_share,
)
from .s3 import (  # noqa: F401 (re-exported)
    TZ_GROUP_MIN_ROWS,
    brown_forsythe,
    s3_merchant_std,
    s3_metrics,
    t_s3_01_merchant_std,
    t_s3_02_tz_differentiation,
    t_s3_03_aggregate_stability,
)
from .s4 import (  # noqa: F401 (re-exported)
    DOMINANT,
    GROUP_SHARE_FLOOR,
    POINT_MASS_DECIMALS,
    s4_floor_metrics,
    s4_group_count_shares,
    s4_ideal_merchant_days,
    s4_merchant_days,
    s4_metrics,
    t_s4_01_max_p_median,
    t_s4_02_max_p_p75,
    t_s4_03_dominant_share,
    t_s4_04_multi_group_share,
    t_s4_05_entropy_median,
    t_s4_06_mass_error,
    t_s4_07_point_mass,
)
from .veto import (  # noqa: F401 (re-exported)
    DOMINANCE_BAND_EDGES,
    MIN_DAYS_FOR_SLOPE,
    MIN_MERCHANTS_PER_BAND,
    RATIO_QUANTILE,
    compression_slopes,
    data_reference_days,
    raw_mix,
    share_ratios,
    slope_by_band,
    veto_metrics,
    veto_summary,
)

"""The standard normal's quantile function (Cephes' ``ndtri``, S. L. Moshier's rational
approximations, the one SciPy's ``scipy.special.ndtri`` and torch's ``special.ndtri`` use)
for numba-compiled loops, which can call neither: the keyed gamma draws' normal candidates
(:mod:`._keyed_draws`). Equal to SciPy's to the bit (``tests/test_keyed_draws.py``).

Examples
--------
>>> round(ndtri(0.975), 6)
1.959964
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import compiled

_EXP_M2 = 0.13533528323661269189  # exp(-2): below it (and above 1 minus it), the tails'
_SQRT_2PI = 2.50662827463100050242  # as Cephes writes it (math.sqrt(2 pi) is 1 ulp below)

# |y - 0.5| <= 0.5 - exp(-2): x = y + y * y^2 * P0(y^2) / Q0(y^2), times sqrt(2 pi)
_P0 = np.array([
    -5.99633501014107895267e1, 9.80010754185999661536e1, -5.66762857469070293439e1,
    1.39312609387279679503e1, -1.23916583867381258016e0,
])  # fmt: skip
_Q0 = np.array([
    1.95448858338141759834e0, 4.67627912898881538453e0, 8.63602421390890590575e1,
    -2.25462687854119370527e2, 2.00260212380060660359e2, -8.20372256168333339912e1,
    1.59056225126211695515e1, -1.18331621121330003142e0,
])  # fmt: skip
# the tails, z = 1 / sqrt(-2 log y): for sqrt(-2 log y) from 2 to 8
_P1 = np.array([
    4.05544892305962419923e0, 3.15251094599893866154e1, 5.71628192246421288162e1,
    4.40805073893200834700e1, 1.46849561928858024014e1, 2.18663306850790267539e0,
    -1.40256079171354495875e-1, -3.50424626827848203418e-2, -8.57456785154685413611e-4,
])  # fmt: skip
_Q1 = np.array([
    1.57799883256466749731e1, 4.53907635128879210584e1, 4.13172038254672030440e1,
    1.50425385692907503408e1, 2.50464946208309415979e0, -1.42182922854787788574e-1,
    -3.80806407691578277194e-2, -9.33259480895457427372e-4,
])  # fmt: skip
# and from 8 on
_P2 = np.array([
    3.23774891776946035970e0, 6.91522889068984211695e0, 3.93881025292474443415e0,
    1.33303460815807542389e0, 2.01485389549179081538e-1, 1.23716634817820021358e-2,
    3.01581553508235416007e-4, 2.65806974686737550832e-6, 6.23974539184983293730e-9,
])  # fmt: skip
_Q2 = np.array([
    6.02427039364742014255e0, 3.67983563856160859403e0, 1.37702099489081330271e0,
    2.16236993594496635890e-1, 1.34204006088543189037e-2, 3.28014464682127739104e-4,
    2.89247864745380683936e-6, 6.79019408009981274425e-9,
])  # fmt: skip


@compiled
def _polynomial(x, coefficients, leading_one):  # pragma: no cover - compiled (numba)
    """Horner's rule, highest power first; ``leading_one``: a leading coefficient of 1 not
    written out (Cephes' ``p1evl``; else ``polevl``)."""
    value = x + coefficients[0] if leading_one else coefficients[0]
    for i in range(1, coefficients.size):
        value = value * x + coefficients[i]
    return value


@compiled(error_model="numpy")
def ndtri(y):  # pragma: no cover - compiled (numba), tested against SciPy
    """x with Phi(x) = y, for y in [0, 1] (-inf at 0, inf at 1)."""
    if y == 0.0:
        return -np.inf
    if y == 1.0:
        return np.inf
    upper = y > 1.0 - _EXP_M2
    if upper:
        y = 1.0 - y
    if y > _EXP_M2:
        y = y - 0.5
        y2 = y * y
        x = y + y * (y2 * _polynomial(y2, _P0, False) / _polynomial(y2, _Q0, True))
        return x * _SQRT_2PI
    x = math.sqrt(-2.0 * math.log(y))
    z = 1.0 / x
    if x < 8.0:
        tail = z * _polynomial(z, _P1, False) / _polynomial(z, _Q1, True)
    else:
        tail = z * _polynomial(z, _P2, False) / _polynomial(z, _Q2, True)
    x = x - math.log(x) / x - tail
    return x if upper else -x

"""Unit conversion, done once when a dataset is read. Inside mara_bench everything is eV, Å, eV/Å.

``KCAL_PER_MOL_IN_EV`` = 1 kcal/mol in eV = 4184 J / (e * N_A) with the CODATA 2014 values of the elementary
charge e = 1.6021766208e-19 C and the Avogadro constant N_A = 6.022140857e23 /mol (Mohr, Newell, Taylor,
Rev. Mod. Phys. 88, 035009 (2016)). This is exactly ASE's default ``ase.units.kcal / ase.units.mol``
(ASE >= 3.18 uses CODATA 2014), the factor with which BOTNet converted rMD17 ethanol split 04 to eV
(``ethanol_botnet/train.xyz`` matches ``rmd17_ethanol_train_04.npz`` times this factor; see PROVENANCE.md).
CODATA 2018 (exact e and N_A) gives 0.0433641042418..., a relative difference of 8e-9.
"""

from __future__ import annotations

from ..errors import UserError

_E_CODATA2014 = 1.6021766208e-19  # C
_NA_CODATA2014 = 6.022140857e23  # 1/mol
KCAL_PER_MOL_IN_EV = 4184.0 / (_E_CODATA2014 * _NA_CODATA2014)  # 0.04336410390059322

# energy unit name -> factor to eV (forces use the same factor per Å)
ENERGY_UNITS = {
    "ev": 1.0,
    "mev": 1e-3,
    "kcal/mol": KCAL_PER_MOL_IN_EV,
    "kj/mol": KCAL_PER_MOL_IN_EV / 4.184,
    "hartree": 27.211386024367243,  # CODATA 2014 Hartree energy in eV (ASE units.Hartree)
}


def energy_factor(unit: str, where: str = "") -> float:
    """Factor that converts an energy (and force per Å) in ``unit`` to eV."""
    key = str(unit).strip().lower().replace(" ", "")
    if key not in ENERGY_UNITS:
        from ..errors import did_you_mean

        raise UserError(f"unknown energy unit '{unit}'{' in ' + where if where else ''}"
                        f"{did_you_mean(key, ENERGY_UNITS)}; choose from: {', '.join(ENERGY_UNITS)}")
    return ENERGY_UNITS[key]

"""Client code for the NOWPayments API: IPN signatures and related helpers."""

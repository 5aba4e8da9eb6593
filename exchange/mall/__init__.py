"""The points mall: a catalogue of items priced in points (or points plus cash) per program,
orders that redeem points and take stock in one transaction, fulfilment and vouchers, and the
supplier of another party's item paid in settlement."""

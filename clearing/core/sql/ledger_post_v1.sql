
CREATE FUNCTION ledger_post(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    take record;
    lot record;
    needed bigint;
    n bigint;
BEGIN
    PERFORM 1 FROM balances b
        JOIN jsonb_to_recordset(p->'moves') AS v(a uuid, s smallint, d bigint, h bigint)
        ON b.account_id = v.a AND b.slot = v.s
        ORDER BY b.account_id, b.slot FOR UPDATE OF b;
    UPDATE balances b SET balance = b.balance + v.d, held = b.held + v.h
        FROM jsonb_to_recordset(p->'moves') AS v(a uuid, s smallint, d bigint, h bigint)
        WHERE b.account_id = v.a AND b.slot = v.s;
    INSERT INTO journal_entries (id, kind, org_id, booked_at, reverses_id, memo)
        SELECT id, kind, org_id, booked_at, reverses_id, memo
        FROM jsonb_to_recordset(p->'entries') AS e(
            id uuid, kind text, org_id uuid, booked_at timestamptz, reverses_id uuid, memo json);
    INSERT INTO postings (entry_id, leg, account_id, asset, amount)
        SELECT entry_id, leg, account_id, asset, amount
        FROM jsonb_to_recordset(p->'postings') AS x(
            entry_id uuid, leg smallint, account_id uuid, asset text, amount bigint);
    INSERT INTO obligations (entry_id, seq, event_type, payer_org_id, payee_org_id, currency,
            amount, program_code, points, point_value, point_value_version, original_entry_id,
            booked_at)
        SELECT entry_id, seq, event_type, payer_org_id, payee_org_id, currency, amount,
            program_code, points, point_value, point_value_version, original_entry_id, booked_at
        FROM jsonb_to_recordset(p->'obligations') AS o(
            entry_id uuid, seq smallint, event_type text, payer_org_id uuid, payee_org_id uuid,
            currency text, amount bigint, program_code text, points bigint,
            point_value numeric, point_value_version integer, original_entry_id uuid,
            booked_at timestamptz);
    INSERT INTO lots (id, account_id, entry_id, source, funding_org_id, source_program,
            earned_at, expires_at, points, remaining)
        SELECT id, account_id, entry_id, source, funding_org_id, source_program, earned_at,
            expires_at, points, points
        FROM jsonb_to_recordset(p->'lots') AS l(
            id uuid, account_id uuid, entry_id uuid, source text, funding_org_id uuid,
            source_program text, earned_at timestamptz, expires_at timestamptz, points bigint);
    -- The member's balance row is locked above, so no other transaction moves its lots now.
    FOR take IN SELECT * FROM jsonb_to_recordset(p->'takes')
            AS t(entry_id uuid, account_id uuid, points bigint) LOOP
        needed := take.points;
        FOR lot IN SELECT id, remaining FROM lots
                WHERE account_id = take.account_id AND remaining > 0
                ORDER BY expires_at IS NULL, expires_at, id LOOP
            EXIT WHEN needed = 0;
            n := least(needed, lot.remaining);
            UPDATE lots SET remaining = remaining - n WHERE id = lot.id;
            INSERT INTO lot_movements (entry_id, lot_id, points) VALUES (take.entry_id, lot.id, -n);
            needed := needed - n;
        END LOOP;
        IF needed > 0 THEN
            RAISE EXCEPTION 'lots do not cover the balance of member account %', take.account_id
                USING ERRCODE = 'CL001';
        END IF;
    END LOOP;
    UPDATE holds h SET status = c.status, captured_points = c.captured, closed_at = c.closed_at
        FROM jsonb_to_recordset(p->'closed_holds')
            AS c(id uuid, status text, captured bigint, closed_at timestamptz)
        WHERE h.id = c.id;
END $$;

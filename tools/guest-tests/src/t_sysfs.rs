// SPDX-License-Identifier: GPL-2.0
//! sysfs: types, attributes, the shared pool, create and remove.

use vfio_mig::sysfs::{self, Mdev};

use crate::device::{TypeSpec, DEVICE_API, LARGE, POOL_UNITS, SMALL, TYPES};
use crate::util::{expect_errno, Ctx, Env, TResult};
use crate::{ensure, ensure_eq};

/// `(small, large)` available_instances.
fn avail(env: &Env) -> Result<(u32, u32), String> {
    Ok((
        env.ty(&SMALL)
            .available_instances()
            .ctx("small available_instances")?,
        env.ty(&LARGE)
            .available_instances()
            .ctx("large available_instances")?,
    ))
}

/// What available_instances must say when `units` pool units are used.
fn avail_for(used: u32) -> (u32, u32) {
    let free = POOL_UNITS - used;
    (free / SMALL.units, free / LARGE.units)
}

pub fn sysfs_types_listed(env: &Env) -> TResult {
    let types = env.parent.types().ctx("list types")?;
    let want: Vec<String> = TYPES.iter().map(|t| t.full_name()).collect();
    ensure_eq!(types, want, "types of {}", env.parent.name());
    Ok(())
}

fn attrs(env: &Env, spec: &TypeSpec) -> TResult {
    env.require_empty_pool()?;
    let ty = env.ty(spec);
    let a = ty.attrs().ctx(&format!("attributes of {}", ty.name()))?;
    ensure_eq!(a.name, spec.name, "{}/name", ty.name());
    ensure_eq!(a.device_api, DEVICE_API, "{}/device_api", ty.name());
    let d = a
        .description
        .ok_or(format!("{} has no description attribute", ty.name()))?;
    ensure!(!d.trim().is_empty(), "{}/description is empty", ty.name());
    ensure!(
        !d.trim_end().contains('\n'),
        "{}/description is not one line: {d:?}",
        ty.name()
    );
    ensure!(
        spec.size_words.iter().any(|w| d.contains(w)),
        "{}/description {d:?} names none of {:?}",
        ty.name(),
        spec.size_words
    );
    ensure_eq!(
        a.available_instances,
        spec.max_instances(),
        "{}/available_instances from an empty pool",
        ty.name()
    );
    ensure_eq!(
        ty.devices().ctx("devices/")?,
        Vec::<String>::new(),
        "{}/devices/ with an empty pool",
        ty.name()
    );
    Ok(())
}

pub fn sysfs_attrs_small(env: &Env) -> TResult {
    attrs(env, &SMALL)
}

pub fn sysfs_attrs_large(env: &Env) -> TResult {
    attrs(env, &LARGE)
}

pub fn sysfs_available_after_create(env: &Env) -> TResult {
    env.require_empty_pool()?;
    ensure_eq!(
        avail(env)?,
        avail_for(0),
        "(small, large) available, empty pool"
    );

    let s = env.create(&SMALL)?;
    ensure_eq!(
        avail(env)?,
        avail_for(SMALL.units),
        "(small, large) available with one small"
    );
    ensure_eq!(
        env.ty(&SMALL).devices().ctx("small devices/")?,
        vec![s.uuid().to_string()],
        "small devices/ after create"
    );
    ensure_eq!(
        sysfs::mdev_type_name(s.uuid()).ctx("mdev_type link")?,
        SMALL.full_name(),
        "mdev_type of the new mdev"
    );
    let l = env.create(&LARGE)?;
    ensure_eq!(
        avail(env)?,
        avail_for(SMALL.units + LARGE.units),
        "(small, large) available with one small and one large"
    );
    s.remove().ctx("remove small")?;
    ensure_eq!(
        avail(env)?,
        avail_for(LARGE.units),
        "(small, large) available with one large"
    );
    l.remove().ctx("remove large")?;
    ensure_eq!(
        avail(env)?,
        avail_for(0),
        "(small, large) available after removing all"
    );
    Ok(())
}

/// Creates `n` of `spec` (guards in `held`), then checks that one more
/// fails with ENOSPC and creates nothing.
fn fill(env: &Env, spec: &TypeSpec, n: u32, held: &mut Vec<Mdev>) -> TResult {
    let ty = env.ty(spec);
    for i in 0..n {
        held.push(
            env.create(spec)
                .map_err(|e| format!("mdev {i} of {n}: {e}"))?,
        );
    }
    let before = ty.devices().ctx("devices/")?;
    let uuid = sysfs::random_uuid().ctx("uuid")?;
    let r = ty.create(&uuid);
    if r.is_ok() {
        held.push(Mdev::adopt(&uuid));
    }
    expect_errno(
        r,
        libc::ENOSPC,
        &format!("create one {} past the pool", spec.suffix),
    )?;
    ensure!(
        !sysfs::mdev_exists(&uuid),
        "the failed create left {uuid} behind"
    );
    ensure_eq!(
        ty.devices().ctx("devices/")?,
        before,
        "devices/ after the failed create"
    );
    Ok(())
}

pub fn sysfs_fill_small(env: &Env) -> TResult {
    env.require_empty_pool()?;
    let mut held = Vec::new();
    fill(env, &SMALL, SMALL.max_instances(), &mut held)?;
    ensure_eq!(
        avail(env)?,
        (0, 0),
        "(small, large) available with a full pool"
    );
    for m in held.drain(..) {
        m.remove().ctx("remove")?;
    }
    ensure_eq!(
        avail(env)?,
        avail_for(0),
        "(small, large) available after removing all"
    );
    Ok(())
}

pub fn sysfs_fill_large(env: &Env) -> TResult {
    env.require_empty_pool()?;
    let mut held = Vec::new();
    fill(env, &LARGE, LARGE.max_instances(), &mut held)?;
    ensure_eq!(
        avail(env)?,
        (0, 0),
        "(small, large) available with a full pool"
    );
    // A small does not fit either.
    let uuid = sysfs::random_uuid().ctx("uuid")?;
    let r = env.ty(&SMALL).create(&uuid);
    if r.is_ok() {
        held.push(Mdev::adopt(&uuid));
    }
    expect_errno(
        r,
        libc::ENOSPC,
        "create a small with the pool full of large",
    )?;
    for m in held.drain(..) {
        m.remove().ctx("remove")?;
    }
    ensure_eq!(
        avail(env)?,
        avail_for(0),
        "(small, large) available after removing all"
    );
    Ok(())
}

pub fn sysfs_fill_mixed(env: &Env) -> TResult {
    env.require_empty_pool()?;
    let mut held = Vec::new();
    let larges = LARGE.max_instances() - 1;
    for _ in 0..larges {
        held.push(env.create(&LARGE)?);
    }
    let used = larges * LARGE.units;
    ensure_eq!(
        avail(env)?,
        avail_for(used),
        "(small, large) available with {larges} large"
    );
    fill(env, &SMALL, (POOL_UNITS - used) / SMALL.units, &mut held)?;
    ensure_eq!(
        avail(env)?,
        (0, 0),
        "(small, large) available with a full pool"
    );
    // Freeing one small frees exactly one small's room.
    held.pop().unwrap().remove().ctx("remove one small")?;
    ensure_eq!(
        avail(env)?,
        avail_for(POOL_UNITS - SMALL.units),
        "after removing one small"
    );
    Ok(())
}

pub fn sysfs_create_existing_uuid(env: &Env) -> TResult {
    env.require_empty_pool()?;
    let m = env.create(&SMALL)?;
    let before = avail(env)?;
    for spec in [&SMALL, &LARGE] {
        let r = env.ty(spec).create(m.uuid());
        expect_errno(
            r,
            libc::EEXIST,
            &format!("create {} with an existing UUID", spec.suffix),
        )?;
    }
    ensure_eq!(
        avail(env)?,
        before,
        "(small, large) available after the failed creates"
    );
    ensure_eq!(
        env.ty(&SMALL).devices().ctx("devices/")?,
        vec![m.uuid().to_string()],
        "small devices/"
    );
    Ok(())
}

pub fn sysfs_create_bad_uuid(env: &Env) -> TResult {
    env.require_empty_pool()?;
    let ty = env.ty(&SMALL);
    for bad in [
        "not-a-uuid",
        "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
        "0123456789abcdef0123456789abcdef012345678",
    ] {
        expect_errno(ty.create(bad), libc::EINVAL, &format!("create {bad:?}"))?;
    }
    ensure_eq!(avail(env)?, avail_for(0), "(small, large) available");
    Ok(())
}

pub fn sysfs_remove_nonexistent(env: &Env) -> TResult {
    let uuid = sysfs::random_uuid().ctx("uuid")?;
    expect_errno(
        sysfs::remove_mdev(&uuid),
        libc::ENOENT,
        "remove a nonexistent mdev",
    )?;
    // And a removed one is gone for good.
    let m = env.create(&SMALL)?;
    let u = m.uuid().to_string();
    m.remove().ctx("remove")?;
    ensure!(!sysfs::mdev_exists(&u), "{u} still exists after remove");
    expect_errno(sysfs::remove_mdev(&u), libc::ENOENT, "remove it again")?;
    Ok(())
}

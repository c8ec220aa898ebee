#!/bin/bash
# Boot-to-init comparison of guest kernels under QEMU (TCG).
#
# Builds a tiny busybox initrd whose /init prints the guest's uptime and
# powers off, boots each kernel N times and prints a table: image size,
# host wall time from QEMU start to the init's first line (median, min,
# max) and the guest's own uptime at init (median).
#
#   kernel-config/bench/boot-compare.sh [-n 10] [-M microvm|q35] [-a "extra cmdline"] \
#       kguest=/path/bzImage debian=/boot/vmlinuz-6.1.0-..-amd64 ...
#
# Needs root (mknod /dev/console for the initrd), qemu-system-x86_64 and
# busybox-static. Runs under TCG: this is what CI machines without
# usable KVM do.
set -euo pipefail

n=10 machine=microvm extra="" mem=256
while getopts "n:M:a:m:" o; do
	case $o in
	n) n=$OPTARG ;;
	M) machine=$OPTARG ;;
	a) extra=$OPTARG ;;
	m) mem=$OPTARG ;;
	*) exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { echo "usage: $0 [-n N] [-M microvm|q35] [-a CMDLINE] NAME=KERNEL..." >&2; exit 2; }

busybox=$(command -v busybox)
file -L "$busybox" | grep -q "statically linked" || { echo "need busybox-static" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys}
cp "$busybox" "$root/bin/busybox"
mknod -m 600 "$root/dev/console" c 5 1
cat >"$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
read up idle </proc/uptime
/bin/busybox mount -t devtmpfs dev /dev
# printk reaches the console synchronously; a tty write may not drain
# before the power-off.
echo "<2>KGUEST-INIT uptime=$up" >/dev/kmsg
/bin/busybox poweroff -f
INIT
chmod 755 "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) >"$work/initrd.gz"

case $machine in
microvm)
	# TSC calibration against the PIT can stall on a busy host.
	mflags=(-M microvm) cmd="console=ttyS0 tsc_early_khz=2096006" ;;
q35)
	mflags=(-M q35) cmd="console=ttyS0" ;;
*)
	echo "unknown machine $machine" >&2; exit 2 ;;
esac
cmd="$cmd reboot=t panic=-1 rdinit=/init $extra"

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

boot() { # kernel -> prints "host_ms guest_uptime"
	local start line
	start=$(date +%s%N)
	timeout 120 qemu-system-x86_64 "${mflags[@]}" -accel tcg -cpu max -m "$mem" -smp 1 \
		-nodefaults -no-user-config -nographic -no-reboot -serial stdio \
		-kernel "$1" -initrd "$work/initrd.gz" -append "$cmd" </dev/null 2>&1 |
		while IFS= read -r line; do
			case $line in
			*KGUEST-INIT*)
				echo "$(( ($(date +%s%N) - start) / 1000000 )) ${line##*uptime=}" | tr -d '\r' ;;
			esac
		done
}

# Boots are interleaved (one round boots every kernel once) so that a
# change of host load hits all kernels alike.
names=() kernels=()
for spec in "$@"; do
	names+=("${spec%%=*}") kernels+=("${spec#*=}")
	: >"$work/times.${#names[@]}"
done
for round in $(seq "$n"); do
	for i in "${!kernels[@]}"; do
		r=$(boot "${kernels[$i]}")
		if [ -z "$r" ]; then
			echo "${names[$i]}: boot $round: no init line" >&2
			continue
		fi
		echo "$r" >>"$work/times.$((i + 1))"
	done
done

printf "%-12s %10s %10s %10s %10s %12s %6s\n" kernel size_KiB host_ms min_ms max_ms guest_up_s boots
for i in "${!kernels[@]}"; do
	t=$work/times.$((i + 1))
	[ -s "$t" ] || continue
	size=$(( $(stat -L -c %s "${kernels[$i]}") / 1024 ))
	host=$(cut -d' ' -f1 "$t" | median)
	min=$(cut -d' ' -f1 "$t" | sort -n | head -1)
	max=$(cut -d' ' -f1 "$t" | sort -n | tail -1)
	guest=$(cut -d' ' -f2 "$t" | median)
	printf "%-12s %10s %10s %10s %10s %12s %6s\n" "${names[$i]}" "$size" "$host" "$min" "$max" "$guest" "$(wc -l <"$t")"
done

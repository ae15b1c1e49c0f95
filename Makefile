# Kimchi in Rust: build and install.
#
#   make build   [PROFILE=release|debug]
#   make install [DESTDIR=/staging] [PREFIX=/usr] [PROFILE=release|debug]
#
# `make install` never builds: it copies target/$(PROFILE)/{kimchid,kimchi-gateway}
# and the system files to where a distribution package puts them. The D-Bus
# activation file and the units name /usr/sbin; another PREFIX is substituted.

PREFIX     ?= /usr
DESTDIR    ?=
PROFILE    ?= release
SYSCONFDIR ?= /etc
CARGO      ?= cargo
INSTALL    ?= install

SBINDIR      = $(PREFIX)/sbin
DATADIR      = $(PREFIX)/share
LIBDIR       = $(PREFIX)/lib
TARGETDIR    = target/$(PROFILE)
BINARIES     = kimchid kimchi-gateway
UNITS        = systemd/kimchid.service systemd/kimchi-gateway.service systemd/kimchi-gateway.socket \
               systemd/kimchi-url-check.socket systemd/kimchi-url-check@.service \
               systemd/kimchi-gateway-certificate.service
# Configuration files: repository path -> name under $(SYSCONFDIR)/kimchi/.
CONFIGS      = kimchid/kimchid.conf kimchi-gateway/gateway.conf
# The introspection XML is produced from the running daemon (KIMCHI_BLESS=1 cargo test);
# it is installed when it is there.
INTROSPECTION = $(wildcard dbus/org.kimchi.Kimchi1.xml)

ifeq ($(PROFILE),release)
CARGO_PROFILE = --release
else ifeq ($(PROFILE),debug)
CARGO_PROFILE = --profile dev
else
$(error PROFILE must be release or debug, not "$(PROFILE)")
endif

# Rewrites /usr/sbin/ to $(SBINDIR)/ while copying (a no-op for PREFIX=/usr).
SUBST = sed -e 's|/usr/sbin/|$(SBINDIR)/|g'

.PHONY: all build install uninstall check-binaries

all: build

build:
	$(CARGO) build --workspace $(CARGO_PROFILE)

check-binaries:
	@for b in $(BINARIES); do \
	  if [ ! -x "$(TARGETDIR)/$$b" ]; then \
	    echo "make install: $(TARGETDIR)/$$b is missing: run 'make build PROFILE=$(PROFILE)' first" >&2; \
	    exit 1; \
	  fi; \
	done

install: check-binaries
	$(INSTALL) -D -m 0755 $(TARGETDIR)/kimchid        $(DESTDIR)$(SBINDIR)/kimchid
	$(INSTALL) -D -m 0755 $(TARGETDIR)/kimchi-gateway $(DESTDIR)$(SBINDIR)/kimchi-gateway
	$(INSTALL) -D -m 0644 dbus/org.kimchi.Kimchi1.conf  $(DESTDIR)$(DATADIR)/dbus-1/system.d/org.kimchi.Kimchi1.conf
	$(INSTALL) -d -m 0755 $(DESTDIR)$(DATADIR)/dbus-1/system-services
	$(SUBST) dbus/org.kimchi.Kimchi1.service > $(DESTDIR)$(DATADIR)/dbus-1/system-services/org.kimchi.Kimchi1.service
	chmod 0644 $(DESTDIR)$(DATADIR)/dbus-1/system-services/org.kimchi.Kimchi1.service
ifneq ($(INTROSPECTION),)
	$(INSTALL) -D -m 0644 $(INTROSPECTION) $(DESTDIR)$(DATADIR)/dbus-1/interfaces/org.kimchi.Kimchi1.xml
else
	@echo "make install: dbus/org.kimchi.Kimchi1.xml is not there yet; not installed" >&2
endif
	$(INSTALL) -D -m 0644 polkit/org.kimchi.policy $(DESTDIR)$(DATADIR)/polkit-1/actions/org.kimchi.policy
	$(INSTALL) -D -m 0644 polkit/rules.d/50-kimchi-gateway.rules $(DESTDIR)$(DATADIR)/polkit-1/rules.d/50-kimchi-gateway.rules
	$(INSTALL) -D -m 0644 systemd/kimchi.pam $(DESTDIR)$(SYSCONFDIR)/pam.d/kimchi
	$(INSTALL) -D -m 0644 systemd/sysusers.d/kimchi.conf $(DESTDIR)$(LIBDIR)/sysusers.d/kimchi.conf
	$(INSTALL) -D -m 0644 systemd/tmpfiles.d/kimchi.conf $(DESTDIR)$(LIBDIR)/tmpfiles.d/kimchi.conf
	$(INSTALL) -d -m 0755 $(DESTDIR)$(LIBDIR)/systemd/system
	for u in $(UNITS); do \
	  $(SUBST) $$u > $(DESTDIR)$(LIBDIR)/systemd/system/$${u##*/} && \
	  chmod 0644 $(DESTDIR)$(LIBDIR)/systemd/system/$${u##*/} || exit 1; \
	done
	@# The administrator's configuration is never overwritten.
	for c in $(CONFIGS); do \
	  dest=$(DESTDIR)$(SYSCONFDIR)/kimchi/$${c##*/}; \
	  if [ -e "$$dest" ]; then \
	    echo "make install: keeping the existing $$dest"; \
	  else \
	    $(INSTALL) -D -m 0644 $$c "$$dest" || exit 1; \
	  fi; \
	done

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/kimchid $(DESTDIR)$(SBINDIR)/kimchi-gateway \
	  $(DESTDIR)$(DATADIR)/dbus-1/system.d/org.kimchi.Kimchi1.conf \
	  $(DESTDIR)$(DATADIR)/dbus-1/system-services/org.kimchi.Kimchi1.service \
	  $(DESTDIR)$(DATADIR)/dbus-1/interfaces/org.kimchi.Kimchi1.xml \
	  $(DESTDIR)$(DATADIR)/polkit-1/actions/org.kimchi.policy \
	  $(DESTDIR)$(DATADIR)/polkit-1/rules.d/50-kimchi-gateway.rules \
	  $(DESTDIR)$(SYSCONFDIR)/pam.d/kimchi \
	  $(DESTDIR)$(LIBDIR)/sysusers.d/kimchi.conf \
	  $(DESTDIR)$(LIBDIR)/tmpfiles.d/kimchi.conf \
	  $(addprefix $(DESTDIR)$(LIBDIR)/systemd/system/,$(notdir $(UNITS)))
	@echo "make uninstall: $(SYSCONFDIR)/kimchi/ (configuration, TLS pair), users and data are left in place"

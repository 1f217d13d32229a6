// The test YARN of gp's CI: a real ResourceManager and NodeManager on 127.0.0.1 with fixed ports, with the
// client configuration written to CONF_DIR (use it as HADOOP_CONF_DIR). Three ways to run it:
//
//   GpMiniYarn cluster CONF_DIR WORK_DIR RM_WEB_PORT RPC_PORT_BASE CONTROL_PORT NM_MB
//       a MiniYARNCluster (RM + NodeManager in this JVM); RPC addresses RPC_PORT_BASE+{0..3} (client,
//       scheduler, resource tracker, admin); CONF_DIR/ready once the NodeManager has registered.
//   GpMiniYarn ha-rm INDEX CONF_DIR WORK_DIR RM_WEB_PORT_BASE RPC_PORT_BASE CONTROL_PORT_BASE
//       ResourceManager rm<INDEX> of an HA pair (rm0 makes itself active, rm1 stays standby; manual
//       failover; the RM state in WORK_DIR/rmstore so the RM that turns active recovers the running
//       applications). Web app RM_WEB_PORT_BASE+INDEX, RPC RPC_PORT_BASE+10*INDEX+{0..3}, control port
//       CONTROL_PORT_BASE+INDEX; rm0 writes CONF_DIR/yarn-site.xml. One RM per JVM: two RM web apps in one
//       JVM share Guice's static filter, and one would answer the other's REST requests.
//   GpMiniYarn ha-nm CONF_DIR WORK_DIR RM_WEB_PORT_BASE RPC_PORT_BASE NM_MB
//       the HA pair's NodeManager (follows failovers through the RM HA client proxy).
//
// A control port (127.0.0.1 only) takes one line per connection and answers one line:
//   state     -> "active" / "standby" (the cluster: its one RM)
//   active    -> makes this RM active (a real HA transition)       standby -> makes it standby
//   stop      -> stops the RM (cluster: the whole cluster) and exits
import java.io.BufferedReader;
import java.io.File;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.PrintWriter;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.Map;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.ha.HAServiceProtocol.RequestSource;
import org.apache.hadoop.ha.HAServiceProtocol.StateChangeRequestInfo;
import org.apache.hadoop.yarn.conf.YarnConfiguration;
import org.apache.hadoop.yarn.server.MiniYARNCluster;
import org.apache.hadoop.yarn.server.nodemanager.NodeManager;
import org.apache.hadoop.yarn.server.resourcemanager.ResourceManager;

public final class GpMiniYarn {
    private static final String HOST = "127.0.0.1";
    private static final String[] RPC_KEYS = {
        YarnConfiguration.RM_ADDRESS,
        YarnConfiguration.RM_SCHEDULER_ADDRESS,
        YarnConfiguration.RM_RESOURCE_TRACKER_ADDRESS,
        YarnConfiguration.RM_ADMIN_ADDRESS,
    };

    private GpMiniYarn() {}

    public static void main(String[] args) {
        try {
            if (args.length == 7 && args[0].equals("cluster")) {
                runCluster(args);
            } else if (args.length == 7 && args[0].equals("ha-rm")) {
                runHaResourceManager(args);
            } else if (args.length == 6 && args[0].equals("ha-nm")) {
                runHaNodeManager(args);
            } else {
                System.err.println("usage: GpMiniYarn cluster CONF_DIR WORK_DIR RM_WEB_PORT RPC_PORT_BASE CONTROL_PORT NM_MB\n"
                    + "       GpMiniYarn ha-rm INDEX CONF_DIR WORK_DIR RM_WEB_PORT_BASE RPC_PORT_BASE CONTROL_PORT_BASE\n"
                    + "       GpMiniYarn ha-nm CONF_DIR WORK_DIR RM_WEB_PORT_BASE RPC_PORT_BASE NM_MB");
                System.exit(2);
            }
        } catch (Throwable t) {
            // Any start-up failure ends the JVM (the cluster's own non-daemon threads would keep it alive).
            t.printStackTrace();
            System.out.flush();
            Runtime.getRuntime().halt(1);
        }
    }

    /** What every process of a test YARN shares: addresses, queues, disk checker, directories. */
    private static YarnConfiguration baseConf(File workDir, int webPort, int rpcBase, int numRms, int nmMb) {
        YarnConfiguration conf = new YarnConfiguration();
        conf.setBoolean(YarnConfiguration.YARN_MINICLUSTER_FIXED_PORTS, true);
        // Real RPC between NodeManager and RM, as on a real cluster.
        conf.setBoolean(YarnConfiguration.YARN_MINICLUSTER_USE_RPC, true);
        conf.setInt(YarnConfiguration.YARN_MINICLUSTER_NM_PMEM_MB, nmMb);
        conf.setInt(YarnConfiguration.NM_PMEM_MB, nmMb);
        conf.setBoolean(YarnConfiguration.NM_PMEM_CHECK_ENABLED, false);
        conf.setBoolean(YarnConfiguration.NM_VMEM_CHECK_ENABLED, false);
        conf.setInt("yarn.nodemanager.resource.cpu-vcores", 16);
        conf.setInt(YarnConfiguration.RM_SCHEDULER_MINIMUM_ALLOCATION_MB, 128);
        conf.setInt(YarnConfiguration.RM_SCHEDULER_MAXIMUM_ALLOCATION_MB, nmMb);
        // The minicluster jar has no capacity-scheduler.xml: define the queues ourselves (the same as
        // scripts/yarn/capacity-scheduler.xml, which an RM re-reads from the classpath when it turns active).
        conf.set("yarn.scheduler.capacity.root.queues", "default,gp");
        for (String queue : new String[] {"default", "gp"}) {
            String prefix = "yarn.scheduler.capacity.root." + queue;
            conf.set(prefix + ".capacity", "50");
            conf.set(prefix + ".maximum-capacity", "100");
            conf.set(prefix + ".user-limit-factor", "2");
        }
        conf.setFloat("yarn.scheduler.capacity.maximum-am-resource-percent", 1.0f);
        // A nearly full disk must not mark the only NodeManager unhealthy.
        conf.setFloat(YarnConfiguration.NM_MAX_PER_DISK_UTILIZATION_PERCENTAGE, 100.0f);
        conf.setBoolean(YarnConfiguration.NM_DISK_UTILIZATION_THRESHOLD_ENABLED, false);
        conf.set("yarn.nodemanager.hostname", HOST);
        conf.set("hadoop.tmp.dir", new File(workDir, "tmp").getAbsolutePath());
        conf.set("fs.defaultFS", "file:///");
        conf.set(YarnConfiguration.RM_HOSTNAME, HOST);
        conf.set(YarnConfiguration.NM_REMOTE_APP_LOG_DIR, new File(workDir, "app-logs").getAbsolutePath());
        conf.setInt(YarnConfiguration.DEBUG_NM_DELETE_DELAY_SEC, 0);
        conf.setBoolean(YarnConfiguration.YARN_ACL_ENABLE, false);
        if (numRms == 1) {
            for (int k = 0; k < RPC_KEYS.length; k++) {
                conf.set(RPC_KEYS[k], HOST + ":" + (rpcBase + k));
            }
            conf.set(YarnConfiguration.RM_WEBAPP_ADDRESS, HOST + ":" + webPort);
            return conf;
        }
        StringBuilder ids = new StringBuilder();
        for (int i = 0; i < numRms; i++) {
            String id = "rm" + i;
            ids.append(i == 0 ? "" : ",").append(id);
            conf.set(YarnConfiguration.RM_HOSTNAME + "." + id, HOST);
            for (int k = 0; k < RPC_KEYS.length; k++) {
                conf.set(RPC_KEYS[k] + "." + id, HOST + ":" + (rpcBase + 10 * i + k));
            }
            conf.set(YarnConfiguration.RM_WEBAPP_ADDRESS + "." + id, HOST + ":" + (webPort + i));
        }
        conf.set(YarnConfiguration.RM_HA_IDS, ids.toString());
        conf.setBoolean(YarnConfiguration.RM_HA_ENABLED, true);
        // No ZooKeeper: failover is manual (the control port), the RM state lives in a shared directory so
        // the RM that becomes active recovers the running applications (work-preserving).
        conf.setBoolean(YarnConfiguration.AUTO_FAILOVER_ENABLED, false);
        conf.set(YarnConfiguration.RM_CLUSTER_ID, "gp-test-yarn-ha");
        conf.setBoolean(YarnConfiguration.RECOVERY_ENABLED, true);
        conf.set(YarnConfiguration.RM_STORE,
            "org.apache.hadoop.yarn.server.resourcemanager.recovery.FileSystemRMStateStore");
        conf.set(YarnConfiguration.FS_RM_STATE_STORE_URI, new File(workDir, "rmstore").toURI().toString());
        conf.setInt("yarn.client.failover-sleep-base-ms", 100);
        conf.setInt("yarn.client.failover-sleep-max-ms", 1000);
        conf.setInt("yarn.resourcemanager.nodemanager-connect-retries", 100);
        return conf;
    }

    /** The single-RM test YARN: one MiniYARNCluster (RM + NodeManager) in this JVM. */
    private static void runCluster(String[] args) throws Exception {
        File confDir = new File(args[1]);
        File workDir = new File(args[2]);
        int webPort = Integer.parseInt(args[3]);
        int rpcBase = Integer.parseInt(args[4]);
        int controlPort = Integer.parseInt(args[5]);
        int nmMb = Integer.parseInt(args[6]);
        confDir.mkdirs();
        workDir.mkdirs();
        new File(confDir, "ready").delete();
        YarnConfiguration conf = baseConf(workDir, webPort, rpcBase, 1, nmMb);

        MiniYARNCluster cluster = new MiniYARNCluster("gp-test-yarn", 1, 1, 1, 1);
        // The NodeManager's web app would shadow the RM's REST API in this JVM (Guice's filter is static, so
        // the last web app started serves every port): run the NodeManager without it, as the minicluster's
        // own single-RM constructor allows. (For the same reason the HA pair runs one RM per JVM.)
        java.lang.reflect.Field nmWeb = MiniYARNCluster.class.getDeclaredField("isNMWebEnabled");
        nmWeb.setAccessible(true);
        nmWeb.setBoolean(cluster, false);
        cluster.init(conf);
        cluster.start();
        if (!cluster.waitForNodeManagersToConnect(60000)) {
            throw new IllegalStateException("the NodeManager did not register with the ResourceManager in 60 s");
        }
        // Right after start() the RM address may still read port 0: wait until it shows the bound port.
        Configuration effective = cluster.getConfig();
        for (int i = 0; i < 600; i++) {
            String address = effective.get(YarnConfiguration.RM_ADDRESS);
            if (address != null && !address.endsWith(":0")) {
                break;
            }
            Thread.sleep(100);
        }
        writeSite(effective, new File(confDir, "yarn-site.xml"), false);
        writeSite(effective, new File(confDir, "core-site.xml"), true);
        markReady(new File(confDir, "ready"));
        Runtime.getRuntime().addShutdownHook(new Thread(cluster::stop));
        ResourceManager[] rms = {cluster.getResourceManager(0)};
        serveControl(controlPort, rms);
        cluster.stop();
        System.exit(0);
    }

    /** One ResourceManager of the HA pair (rm INDEX); rm0 makes itself active once started. */
    private static void runHaResourceManager(String[] args) throws Exception {
        int index = Integer.parseInt(args[1]);
        File confDir = new File(args[2]);
        File workDir = new File(args[3]);
        int webBase = Integer.parseInt(args[4]);
        int rpcBase = Integer.parseInt(args[5]);
        int controlBase = Integer.parseInt(args[6]);
        confDir.mkdirs();
        workDir.mkdirs();
        YarnConfiguration conf = baseConf(workDir, webBase, rpcBase, 2, 1024);
        if (index == 0) {
            // Clients (HADOOP_CONF_DIR) get the pair's configuration, without this process's own id.
            new File(confDir, "ready").delete();
            YarnConfiguration client = new YarnConfiguration(conf);
            writeSite(client, new File(confDir, "yarn-site.xml"), false);
            writeSite(client, new File(confDir, "core-site.xml"), true);
        }
        conf.set(YarnConfiguration.RM_HA_ID, "rm" + index);
        ResourceManager rm = new ResourceManager();
        rm.init(conf);
        rm.start();
        if (index == 0) {
            activate(new ResourceManager[] {rm}, 0);
        }
        markReady(new File(confDir, "ready-rm" + index));
        Runtime.getRuntime().addShutdownHook(new Thread(rm::stop));
        serveControl(controlBase + index, new ResourceManager[] {rm});
        rm.stop();
        System.exit(0);
    }

    /** The HA pair's NodeManager, in its own JVM (its web app would shadow an RM's in the same JVM). */
    private static void runHaNodeManager(String[] args) throws Exception {
        File confDir = new File(args[1]);
        File workDir = new File(args[2]);
        int webBase = Integer.parseInt(args[3]);
        int rpcBase = Integer.parseInt(args[4]);
        int nmMb = Integer.parseInt(args[5]);
        YarnConfiguration conf = baseConf(workDir, webBase, rpcBase, 2, nmMb);
        File local = new File(workDir, "nm-local");
        File logs = new File(workDir, "nm-logs");
        local.mkdirs();
        logs.mkdirs();
        conf.set(YarnConfiguration.NM_LOCAL_DIRS, local.getAbsolutePath());
        conf.set(YarnConfiguration.NM_LOG_DIRS, logs.getAbsolutePath());
        conf.set(YarnConfiguration.NM_ADDRESS, HOST + ":0");
        conf.set(YarnConfiguration.NM_LOCALIZER_ADDRESS, HOST + ":0");
        conf.set(YarnConfiguration.NM_WEBAPP_ADDRESS, HOST + ":0");
        NodeManager nm = new NodeManager();
        nm.init(conf);
        nm.start();
        markReady(new File(confDir, "ready-nm"));
        Runtime.getRuntime().addShutdownHook(new Thread(nm::stop));
        Thread.currentThread().join();
    }

    private static void markReady(File ready) throws Exception {
        Files.write(ready.toPath(), ("pid " + ProcessHandle.current().pid() + "\n").getBytes(StandardCharsets.UTF_8));
    }

    /** Serves the control port until "stop" (see the header). rms[i] is "rm" + i of this process. */
    private static void serveControl(int controlPort, ResourceManager[] rms) throws Exception {
        try (ServerSocket server = new ServerSocket(controlPort, 8, InetAddress.getByName(HOST))) {
            while (true) {
                try (Socket socket = server.accept();
                     BufferedReader in = new BufferedReader(
                         new InputStreamReader(socket.getInputStream(), StandardCharsets.UTF_8));
                     PrintWriter out = new PrintWriter(socket.getOutputStream(), true, StandardCharsets.UTF_8)) {
                    String line = in.readLine();
                    String[] words = line == null ? new String[0] : line.trim().split("\\s+");
                    try {
                        if (words.length == 1 && words[0].equals("state")) {
                            out.println(state(rms));
                        } else if (words.length == 1 && words[0].equals("active")) {
                            activate(rms, 0);
                            out.println(state(rms));
                        } else if (words.length == 1 && words[0].equals("standby")) {
                            standby(rms, 0);
                            out.println(state(rms));
                        } else if (words.length == 1 && words[0].equals("stop")) {
                            out.println("stopping");
                            return;
                        } else {
                            out.println("error: unknown command " + line);
                        }
                    } catch (Exception e) {
                        out.println("error: " + e);
                    }
                }
            }
        }
    }

    private static StateChangeRequestInfo byUser() {
        return new StateChangeRequestInfo(RequestSource.REQUEST_BY_USER);
    }

    private static void standby(ResourceManager[] rms, int index) throws Exception {
        rms[index].getRMContext().getRMAdminService().transitionToStandby(byUser());
    }

    private static void activate(ResourceManager[] rms, int index) throws Exception {
        rms[index].getRMContext().getRMAdminService().transitionToActive(byUser());
    }

    private static String state(ResourceManager[] rms) throws Exception {
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < rms.length; i++) {
            out.append(i == 0 ? "" : " ").append(
                rms[i].getRMContext().getRMAdminService().getServiceStatus().getState().toString().toLowerCase());
        }
        return out.toString();
    }

    // Writes the cluster's effective configuration for clients. core-site.xml gets the fs.* / hadoop.*
    // properties (the client's default file system is the local one); yarn-site.xml gets the yarn.* ones.
    private static void writeSite(Configuration effective, File file, boolean core) throws Exception {
        Configuration out = new Configuration(false);
        for (Map.Entry<String, String> entry : effective) {
            String key = entry.getKey();
            boolean isYarn = key.startsWith("yarn.");
            boolean isCore = key.startsWith("fs.") || key.startsWith("hadoop.");
            if (core ? isCore : isYarn) {
                out.set(key, effective.get(key));
            }
        }
        File tmp = new File(file.getPath() + ".tmp");
        try (OutputStream stream = new FileOutputStream(tmp)) {
            out.writeXml(stream);
        }
        Files.move(tmp.toPath(), file.toPath(), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
    }
}
